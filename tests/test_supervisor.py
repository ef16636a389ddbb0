import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from common.supervisor import RestartPolicy, StageSpec, Supervisor

SCRIPT = Path(__file__).parent / "processes" / "scripted_stage.py"
FAST_RESTARTS = RestartPolicy(initial_backoff_s=0.05, max_backoff_s=0.2, max_crashes=3, window_s=30.0)


def spec(name: str, role: str, behaviour: str, state_dir: Path) -> StageSpec:
    return StageSpec(name=name, role=role, argv=[sys.executable, str(SCRIPT), behaviour, str(state_dir)])


def pids(state_dir: Path, behaviour: str) -> list[int]:
    path = state_dir / f"{behaviour}.pids"
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def wait_for(condition, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def run_in_thread(supervisor: Supervisor) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()), daemon=True)
    thread.start()
    return thread, result


def test_sink_exit_ends_run(tmp_path):
    supervisor = Supervisor(
        [spec("capture", "capture", "serve", tmp_path), spec("sink", "sink", "finish", tmp_path)],
        tmp_path / "run", FAST_RESTARTS,
    )
    thread, result = run_in_thread(supervisor)
    assert wait_for(lambda: (tmp_path / "run" / "sink.ready").exists())

    (tmp_path / "finish").write_text("")
    thread.join(timeout=20)

    assert result == [0]
    assert (tmp_path / "serve.stopped").exists(), "capture was not stopped after the sink finished"


def test_crashed_stage_restarted(tmp_path, caplog):
    supervisor = Supervisor(
        [spec("detector", "detector", "crash-once", tmp_path), spec("sink", "sink", "finish", tmp_path)],
        tmp_path / "run", FAST_RESTARTS,
    )
    thread, result = run_in_thread(supervisor)

    assert wait_for(lambda: len(pids(tmp_path, "crash-once")) == 2), "detector was not restarted"
    first, second = pids(tmp_path, "crash-once")
    assert first != second

    (tmp_path / "finish").write_text("")
    with caplog.at_level("WARNING", logger="common.supervisor"):
        thread.join(timeout=20)
    assert result == [0]
    assert "Stages restarted after crashes during this run: detector (1 crash)" in caplog.text


def test_sink_restart_after_capture_finished(tmp_path):
    # The sink crashes right after its first start. Capture, a very short file source, has finished by then.
    supervisor = Supervisor(
        [spec("sink", "sink", "crash-once", tmp_path), spec("capture", "capture", "quick-exit", tmp_path)],
        tmp_path / "run", FAST_RESTARTS, drain_timeout_s=0.5,
    )
    thread, result = run_in_thread(supervisor)

    assert wait_for(lambda: len(pids(tmp_path, "crash-once")) == 2), "sink was not restarted"
    supervisor.stop_event.set()
    thread.join(timeout=20)

    assert (tmp_path / "crash-once.capture_finished").read_text().split() == ["unset", "1"]
    assert result == [0]


def test_stage_failing_to_start_reported(tmp_path, caplog):
    supervisor = Supervisor([spec("classifier", "classifier", "crash", tmp_path)], tmp_path / "run", FAST_RESTARTS)

    with caplog.at_level("ERROR"):
        code = supervisor.run()

    assert code == 1
    assert "Stage classifier exited with status 3 before it was ready" in caplog.text
    # The error line, not the last line, explains the failure.
    assert "before it was ready: 12:00:00 ERROR   [classifier] model file not found" in caplog.text


def test_stage_finishing_before_ready_not_an_error(tmp_path):
    supervisor = Supervisor(
        [spec("sink", "sink", "finish", tmp_path), spec("capture", "capture", "quick-exit", tmp_path)],
        tmp_path / "run", FAST_RESTARTS,
    )
    thread, result = run_in_thread(supervisor)
    assert wait_for(lambda: supervisor.stages[1].finished), "capture's clean exit was not recorded"

    (tmp_path / "finish").write_text("")
    thread.join(timeout=20)

    assert result == [0]
    assert len(pids(tmp_path, "quick-exit")) == 1, "a stage that exited 0 must not be restarted"


def test_crash_loop_gives_up(tmp_path, caplog):
    supervisor = Supervisor(
        [spec("capture", "capture", "serve", tmp_path), spec("detector", "detector", "serve", tmp_path)],
        tmp_path / "run", FAST_RESTARTS,
    )
    thread, result = run_in_thread(supervisor)
    assert wait_for(lambda: (tmp_path / "run" / "detector.ready").exists())

    # Kill the detector each time it comes back, more often than the policy allows.
    killed: set[int] = set()
    deadline = time.monotonic() + 20
    while thread.is_alive() and time.monotonic() < deadline:
        for pid in pids(tmp_path, "serve")[1:]:
            if pid not in killed:
                killed.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.02)
    thread.join(timeout=20)

    assert result == [1]
    assert "crashed 4 times within 30 s; giving up" in caplog.text


def test_sigterm_drains_then_stops(tmp_path):
    supervisor = Supervisor(
        [spec("capture", "capture", "serve", tmp_path), spec("sink", "sink", "finish", tmp_path)],
        tmp_path / "run", FAST_RESTARTS, drain_timeout_s=0.5,
    )
    thread, result = run_in_thread(supervisor)
    assert wait_for(lambda: (tmp_path / "run" / "sink.ready").exists())

    supervisor.request_stop(signal.SIGTERM)
    thread.join(timeout=30)

    assert result == [0]
    assert (tmp_path / "serve.stopped").exists()
    assert (tmp_path / "finish.stopped").exists()


def test_stages_stop_when_supervisor_killed(tmp_path):
    counting = Path(__file__).parent / "processes" / "counting_stage.py"
    closed_file = tmp_path / "closed.txt"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from common.supervisor import StageSpec, Supervisor\n"
        f"spec = StageSpec(name='capture', role='capture', argv=[sys.executable, {str(counting)!r}, "
        f"{str(closed_file)!r}])\n"
        f"sys.exit(Supervisor([spec], Path({str(tmp_path / 'run')!r})).run())\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (tmp_path / "run" / "capture.ready").exists()), "the stage never became ready"
        supervisor.kill()
        supervisor.wait(timeout=10)

        assert wait_for(closed_file.exists), "the stage kept running after its supervisor was killed"
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        supervisor.communicate(timeout=10)
    assert closed_file.read_text().startswith("closed after")
