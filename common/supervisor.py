"""Start, watch, restart and stop the pipeline's stage processes.

The supervisor keeps a table of stage processes. It starts them in order and
waits until each reports ready, restarts a crashed stage with exponential
backoff, and gives up when one crashes too often within a window. Clean exits
(status 0) are left alone, except the sink's: the sink exits 0 once every
source has ended and every frame is written, which ends the run.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only
the supervisor. The supervisor then stops the stages upstream first. Capture
ends its streams, the frames in flight drain through the detector and the
classifier workers, and the sink closes its outputs and exits. The remaining
stages are stopped last.
"""

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 40
RESTART_COUNT_VARIABLE = "EMOTION_PIPELINE_RESTART_COUNT"
# The supervisor's pid, so that a stage can ask to be stopped when the supervisor dies.
SUPERVISOR_PID_VARIABLE = "EMOTION_PIPELINE_SUPERVISOR_PID"
# Set to 1 for a sink started after every capture stage finished: the ends of
# stream went to an earlier sink, so this one must not wait for them.
CAPTURE_FINISHED_VARIABLE = "EMOTION_PIPELINE_CAPTURE_FINISHED"
ERROR_LINE = re.compile(r" (ERROR|CRITICAL) |^\w*(Error|Exception): ")
# The date and time a stage's log line starts with; the supervisor's own line has them already.
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")


class StageStartError(RuntimeError):
    """A stage process exited or timed out before it reported ready."""


@dataclass(frozen=True)
class StageSpec:
    """How to start one stage process."""

    name: str
    argv: list[str]  # the command line, without the --ready-file option the supervisor adds
    role: str  # capture, detector, classifier or sink: decides the stop order
    restart: bool = True


@dataclass
class StageProcess:
    spec: StageSpec
    ready_file: Path
    popen: subprocess.Popen | None = None
    started_at: float = 0.0
    crash_times: deque = field(default_factory=lambda: deque(maxlen=64))
    restart_at: float | None = None
    finished: bool = False
    launches: int = 0  # times this stage was started
    stderr_reader: threading.Thread | None = None
    stderr_tail: deque = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))


@dataclass(frozen=True)
class RestartPolicy:
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    max_crashes: int = 5  # within window_s, before the supervisor gives up
    window_s: float = 60.0


STOP_ORDER = ("capture", "detector", "classifier", "sink")


class Supervisor:
    def __init__(
        self,
        specs: list[StageSpec],
        run_dir: Path,
        policy: RestartPolicy = RestartPolicy(),
        ready_timeout_s: float = 120.0,
        drain_timeout_s: float = 30.0,
    ):
        self.run_dir = run_dir
        self.policy = policy
        self.ready_timeout_s = ready_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.stop_event = threading.Event()
        self.stages = [StageProcess(spec, run_dir / f"{spec.name}.ready") for spec in specs]

    # Starting

    def start_all(self) -> None:
        """Start every stage in table order, each once the previous one is ready."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stage in self.stages:
            if self.stop_event.is_set():
                return
            self.launch(stage)
            self.wait_ready(stage)

    def launch(self, stage: StageProcess) -> None:
        stage.ready_file.unlink(missing_ok=True)
        argv = [*stage.spec.argv, "--ready-file", str(stage.ready_file)]
        environment = process_environment()
        # Tells a restarted stage not to overwrite what its previous run wrote.
        environment[RESTART_COUNT_VARIABLE] = str(stage.launches)
        environment[SUPERVISOR_PID_VARIABLE] = str(os.getpid())
        environment.pop(CAPTURE_FINISHED_VARIABLE, None)
        captures = self.stages_with_role("capture")
        if stage.spec.role == "sink" and captures and all(capture.finished for capture in captures):
            environment[CAPTURE_FINISHED_VARIABLE] = "1"
            logger.info("Every capture stage has finished; the sink will finish once no message comes")
        stage.popen = subprocess.Popen(
            argv,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=environment,
            text=True,
            errors="replace",
        )
        stage.started_at = time.monotonic()
        stage.restart_at = None
        stage.stderr_reader = threading.Thread(target=self.forward_stderr, args=(stage,), daemon=True)
        stage.stderr_reader.start()
        logger.info("Started stage %s (pid %d)", stage.spec.name, stage.popen.pid)
        stage.launches += 1

    def forward_stderr(self, stage: StageProcess) -> None:
        """Copy a child's log lines to our stderr and keep the last ones for crash reports."""
        assert stage.popen is not None and stage.popen.stderr is not None
        for line in stage.popen.stderr:
            stage.stderr_tail.append(line.rstrip("\n"))
            sys.stderr.write(line)

    def wait_ready(self, stage: StageProcess) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while not stage.ready_file.exists():
            code = stage.popen.poll()
            if code == 0:
                # A short file source can finish before the supervisor reads its ready file.
                logger.info("Stage %s finished before it was seen ready (status 0)", stage.spec.name)
                return
            if code is not None:
                raise StageStartError(
                    f"Stage {stage.spec.name} exited with status {code} before it was ready: "
                    + last_error_line(stage)
                )
            if time.monotonic() > deadline:
                raise StageStartError(
                    f"Stage {stage.spec.name} was not ready after {self.ready_timeout_s:.0f} s: "
                    + last_error_line(stage)
                )
            if self.stop_event.wait(0.05):
                logger.info("Stop requested while waiting for stage %s to be ready", stage.spec.name)
                return
        logger.info(
            "Stage %s ready after %.1f s", stage.spec.name, time.monotonic() - stage.started_at
        )

    # Watching

    def run(self) -> int:
        """Start the stages and watch them until the sink finishes or a stop is requested."""
        self.install_signal_handlers()
        try:
            self.start_all()
        except StageStartError as error:
            logger.error("%s", error)
            self.stop_all()
            return 1

        try:
            while not self.stop_event.is_set():
                outcome = self.check_stages()
                if outcome is not None:
                    return outcome
                self.stop_event.wait(0.1)
            logger.info("Stop requested; draining frames in flight")
            return self.drain_and_stop()
        finally:
            self.stop_all()
            self.log_crashes()

    def log_crashes(self) -> None:
        """Sum up the stages that crashed and were restarted, so a run that ends well still shows them."""
        crashed = []
        for stage in self.stages:
            count = len(stage.crash_times)
            if count:
                crashed.append(f"{stage.spec.name} ({count} {'crash' if count == 1 else 'crashes'})")
        if crashed:
            logger.warning("Stages restarted after crashes during this run: %s. See docs/reliability.md for "
                           "what each stage's crash loses", ", ".join(crashed))

    def check_stages(self) -> int | None:
        """Restart crashed stages; return an exit status when the run is over."""
        now = time.monotonic()
        for stage in self.stages:
            if stage.finished:
                continue
            if stage.restart_at is not None:
                if now >= stage.restart_at:
                    logger.info("Restarting stage %s", stage.spec.name)
                    self.launch(stage)
                continue

            code = stage.popen.poll()
            if code is None:
                continue
            if code == 0:
                stage.finished = True
                logger.info("Stage %s finished (pid %d, status 0)", stage.spec.name, stage.popen.pid)
                if stage.spec.role == "sink":
                    logger.info("Sink finished; stopping the other stages")
                    return 0
                continue
            if not self.schedule_restart(stage, code, now):
                return 1
        return None

    def schedule_restart(self, stage: StageProcess, code: int, now: float) -> bool:
        """Plan a restart with backoff; return False when the stage crashes too often."""
        reason = describe_exit(code)
        logger.error(
            "Stage %s crashed (pid %d, %s): %s",
            stage.spec.name, stage.popen.pid, reason, last_error_line(stage),
        )
        if not stage.spec.restart:
            return False

        stage.crash_times.append(now)
        recent = [when for when in stage.crash_times if now - when <= self.policy.window_s]
        if len(recent) > self.policy.max_crashes:
            logger.error(
                "Stage %s crashed %d times within %.0f s; giving up",
                stage.spec.name, len(recent), self.policy.window_s,
            )
            return False

        backoff = min(
            self.policy.max_backoff_s, self.policy.initial_backoff_s * 2 ** (len(recent) - 1)
        )
        stage.restart_at = now + backoff
        logger.info("Restarting stage %s in %.1f s", stage.spec.name, backoff)
        return True

    # Stopping

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.request_stop)

    def request_stop(self, signum: int, _frame=None) -> None:
        if not self.stop_event.is_set():
            logger.info("Received %s", signal.Signals(signum).name)
        self.stop_event.set()

    def drain_and_stop(self) -> int:
        """Stop capture, let the sink write what is in flight, then stop everything."""
        for stage in self.stages_with_role("capture"):
            self.terminate(stage)

        deadline = time.monotonic() + self.drain_timeout_s
        sinks = self.stages_with_role("sink")
        while time.monotonic() < deadline and any(is_running(stage) for stage in sinks):
            time.sleep(0.05)
        if any(is_running(stage) for stage in sinks):
            logger.warning("Sink still draining after %.0f s; stopping it", self.drain_timeout_s)
        return 0

    def stop_all(self) -> None:
        """Stop every stage in pipeline order: SIGTERM, wait, then SIGKILL. Safe to call twice."""
        for role in STOP_ORDER:
            for stage in self.stages_with_role(role):
                self.terminate(stage)

    def terminate(self, stage: StageProcess, timeout_s: float = 10.0) -> None:
        stage.restart_at = None
        stage.finished = True
        if not is_running(stage):
            return
        stage.popen.send_signal(signal.SIGTERM)
        try:
            code = stage.popen.wait(timeout_s)
            logger.info("Stage %s stopped (pid %d, %s)", stage.spec.name, stage.popen.pid, describe_exit(code))
        except subprocess.TimeoutExpired:
            logger.warning(
                "Stage %s did not stop within %.0f s of SIGTERM; killing pid %d",
                stage.spec.name, timeout_s, stage.popen.pid,
            )
            stage.popen.kill()
            stage.popen.wait()

    def stages_with_role(self, role: str) -> list[StageProcess]:
        return [stage for stage in self.stages if stage.spec.role == role]


def is_running(stage: StageProcess) -> bool:
    return stage.popen is not None and stage.popen.poll() is None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def last_error_line(stage: StageProcess) -> str:
    """Return the last non-empty stderr line of a stage, waiting briefly for the reader to catch up."""
    if stage.stderr_reader is not None and not is_running(stage):
        stage.stderr_reader.join(timeout=1.0)
    lines = [line.strip() for line in stage.stderr_tail if line.strip()]
    for line in reversed(lines):
        if ERROR_LINE.search(line):
            return LOG_PREFIX.sub("", line)
    if not lines:
        return "no output on stderr"
    return f"no error logged (last line: {LOG_PREFIX.sub('', lines[-1])})"


def stage_command(*arguments: str) -> list[str]:
    """Build the command line that starts one `emotion-pipeline` subcommand with this interpreter."""
    return [sys.executable, "-m", "common.cli", *arguments]


def process_environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment.setdefault("PYTHONUNBUFFERED", "1")
    return environment
