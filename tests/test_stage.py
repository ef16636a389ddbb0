import logging
import os
import signal
import threading
import urllib.request

import pytest
from prometheus_client import REGISTRY

from common.stage import EXIT_CRASHED, EXIT_OK, StageRunner, read_ready_file


class RecordingLogic:
    """Stage logic that records its calls; steps finish, crash or wait as configured."""

    def __init__(self, *, finish_after: int | None = None, fail_in: str | None = None,
                 stop_event: threading.Event | None = None):
        self.finish_after = finish_after
        self.fail_in = fail_in
        self.stop_event = stop_event
        self.calls: list[str] = []
        self.steps = 0

    def setup(self) -> None:
        self.calls.append("setup")
        if self.fail_in == "setup":
            raise OSError("camera not found")

    def step(self, timeout_s: float) -> bool:
        self.steps += 1
        if self.fail_in == "step" and self.steps == 2:
            raise RuntimeError("decoder failed")
        if self.stop_event is not None:
            self.stop_event.wait(timeout_s)
        return self.steps != self.finish_after

    def close(self) -> None:
        self.calls.append("close")
        if self.fail_in == "close":
            raise OSError("disk full")


def run_in_process(logic, **options) -> int:
    options = {"stage": "test-stage", "log_level": None, "handle_signals": False, **options}
    return StageRunner(logic, **options).run()


def stage_state(stage: str, state: str) -> float | None:
    return REGISTRY.get_sample_value("emotion_stage_state", {"stage": stage, "state": state})


def test_runner_stops_when_step_finishes(tmp_path):
    logic = RecordingLogic(finish_after=3)

    exit_code = run_in_process(logic, stage="test-finish", ready_file=tmp_path / "ready")

    assert exit_code == EXIT_OK
    assert logic.steps == 3
    assert logic.calls == ["setup", "close"]
    assert stage_state("test-finish", "stopping") == 1.0
    assert stage_state("test-finish", "ready") == 0.0
    assert not (tmp_path / "ready").exists()


@pytest.mark.parametrize("phase", ["setup", "step", "close"])
def test_runner_crash_exits_1_and_closes(phase, caplog):
    logic = RecordingLogic(finish_after=5, fail_in=phase)
    caplog.set_level(logging.INFO, logger="common.stage")

    exit_code = run_in_process(logic)

    assert exit_code == EXIT_CRASHED
    assert logic.calls[-1] == "close"
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    if phase == "setup":
        # A setup error is one line naming the cause; its traceback goes to the debug log.
        assert errors[0].exc_info is None
        assert "failed to start" in errors[0].getMessage()
    else:
        assert errors[0].exc_info is not None


def test_setup_failure_skips_steps():
    logic = RecordingLogic(fail_in="setup")

    run_in_process(logic)

    assert logic.steps == 0


def test_request_stop_from_another_thread():
    stop_event = threading.Event()
    logic = RecordingLogic(stop_event=stop_event)
    runner = StageRunner(logic, stage="test-thread", log_level=None, handle_signals=False,
                         stop_event=stop_event, step_timeout_s=5.0)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(runner.run()))
    thread.start()

    runner.request_stop("test done")
    runner.request_stop("second request")
    thread.join(timeout=10)

    assert not thread.is_alive()
    assert result == [EXIT_OK]
    assert logic.calls == ["setup", "close"]


def test_runner_rejects_signal_handlers_outside_main_thread():
    errors: list[Exception] = []
    logic = RecordingLogic(finish_after=1)
    runner = StageRunner(logic, stage="test-thread", log_level=None, handle_signals=True)

    def run() -> None:
        try:
            runner.run()
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)

    assert len(errors) == 1
    assert "handle_signals=False" in str(errors[0])
    assert logic.calls == []


def test_runner_rejects_bad_step_timeout():
    with pytest.raises(ValueError, match="step_timeout_s"):
        StageRunner(RecordingLogic(), stage="test", step_timeout_s=0)


def test_ready_file_written_after_setup(tmp_path):
    ready_file = tmp_path / "run" / "detector.ready"
    seen: list[dict | None] = []

    class CheckingLogic(RecordingLogic):
        def step(self, timeout_s):
            seen.append(read_ready_file(ready_file))
            return False

    exit_code = run_in_process(CheckingLogic(), stage="detector", ready_file=ready_file)

    assert exit_code == EXIT_OK
    assert seen[0]["stage"] == "detector"
    assert seen[0]["pid"] == os.getpid()
    assert seen[0]["metrics_port"] is None
    assert read_ready_file(ready_file) is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_process_stops_cleanly_on_signal(start_process, tmp_path, wait_until, signum):
    ready_file, closed_file = tmp_path / "ready.json", tmp_path / "closed"
    stage = start_process("counting_stage.py", closed_file, "--ready-file", ready_file)
    assert wait_until(lambda: ready_file.exists() or stage.poll() is not None)
    assert stage.poll() is None, stage.stderr.read()
    ready = read_ready_file(ready_file)

    with urllib.request.urlopen(f"http://127.0.0.1:{ready['metrics_port']}/metrics", timeout=10) as response:
        scraped = response.read().decode()
    stage.send_signal(signum)
    stage.send_signal(signum)  # a second signal takes the same path and changes nothing
    exit_code = stage.wait(timeout=20)
    stderr = stage.stderr.read()

    assert ready["pid"] == stage.pid
    assert 'emotion_stage_state{stage="counting",state="ready"} 1.0' in scraped
    assert exit_code == 0, stderr
    assert closed_file.read_text().startswith("closed after")
    assert not ready_file.exists()
    assert f"stopping: received {signal.Signals(signum).name}" in stderr
    assert "[counting test]" in stderr
    assert "Stage counting ready" in stderr


def test_process_crash_exits_1_with_traceback(start_process, tmp_path):
    closed_file = tmp_path / "closed"
    stage = start_process("counting_stage.py", closed_file, "--crash-after", "3")

    exit_code = stage.wait(timeout=20)
    stderr = stage.stderr.read()

    assert exit_code == 1
    assert "Traceback" in stderr
    assert "RuntimeError: planned crash at step 3" in stderr
    assert closed_file.read_text() == "closed after 3 steps\n"



def test_classifier_worker_logs_its_index(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "missing.tflite"
    result = subprocess.run(
        [sys.executable, "-m", "common.cli", "classifier", "--worker-index", "3", "--model", str(missing),
         "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 1
    assert "[classifier-3] common.stage: Stage classifier failed to start" in result.stderr
    assert "[classifier] " not in result.stderr
