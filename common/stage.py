"""The main loop of a stage process, around a plain stage-logic object.

A logic object has three methods and no process code:

- `setup()` opens what the stage needs (sockets, model, source);
- `step(timeout_s) -> bool` does one unit of work, waiting at most about
  `timeout_s` for input, and returns False when the stage has finished (a file
  source at its end);
- `close()` releases everything; it runs even when setup or a step failed.

`StageRunner.run()` sets up logging, turns SIGTERM and SIGINT into one stop
event, serves metrics, publishes the stage state (`emotion_stage_state` and a
log line), then calls `step` until the stop event is set or `step` returns
False. It returns the process exit code: 0 after a requested stop or a finished
stage, 1 after an exception in `setup`, `step` or `close` (logged with its
traceback).

Readiness: once `setup()` has returned, the runner writes the ready file, if it
was given one, by an atomic rename, so a reader never sees it half written. It
contains one JSON object: `stage`, `pid`, `metrics_port` (the bound port, or null
when metrics are off) and `ready_time` (Unix seconds). The runner deletes the
file when the stage stops, so its presence means "ready now". A supervisor
polls for the file; a person reads the "ready" log line.
"""

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

from common.config_cli import add_config_arguments
from common.logs import setup_logging
from common.metrics import set_stage_state, start_metrics_server
from common.supervisor import SUPERVISOR_PID_VARIABLE

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CRASHED = 1
# prctl option of Linux: the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


class StageLogic(Protocol):
    def setup(self) -> None: ...

    def step(self, timeout_s: float) -> bool: ...

    def close(self) -> None: ...


class StageRunner:
    """Run a stage-logic object as the main loop of a process.

    `metrics_port`: None disables the metrics server, 0 picks a free port.
    `log_level`: None leaves logging as it is (for tests inside one process).
    `log_name`: the name in brackets on each log line, `stage` by default.
    `stop_event`: pass one to share it with the logic, so that long operations
    inside a step can watch it too.
    """

    def __init__(self, logic: StageLogic, *, stage: str, source: str | None = None,
                 log_level: str | None = "INFO", metrics_port: int | None = None,
                 metrics_host: str = "127.0.0.1", ready_file: Path | None = None,
                 step_timeout_s: float = 0.1, stop_event: threading.Event | None = None,
                 handle_signals: bool = True, log_name: str | None = None):
        if step_timeout_s <= 0:
            raise ValueError(f"step_timeout_s must be above 0 seconds, got {step_timeout_s}")
        self.logic = logic
        self.stage = stage
        self.source = source
        self.log_level = log_level
        self.log_name = log_name or stage
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.ready_file = ready_file
        self.step_timeout_s = step_timeout_s
        self.stop_event = stop_event or threading.Event()
        self.handle_signals = handle_signals
        self.bound_metrics_port: int | None = None
        self._stop_reason: str | None = None
        self._stop_lock = threading.Lock()

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to stop after the current step; later calls change nothing."""
        with self._stop_lock:
            if self._stop_reason is not None:
                return
            self._stop_reason = reason
        self.stop_event.set()

    def run(self) -> int:
        """Run setup, the step loop and close, and return the exit code."""
        if self.handle_signals and threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be installed in the main thread: pass "
                               "handle_signals=False and call request_stop() instead")
        if self.log_level is not None:
            setup_logging(self.log_name, self.log_level, self.source)
        started = time.monotonic()
        logger.info("Stage %s starting (pid %d)", self.stage, os.getpid())
        set_stage_state(self.stage, "starting")
        if self.handle_signals:
            self._install_signal_handlers()
            stop_with_supervisor()

        exit_code = EXIT_OK
        phase = "setup"
        try:
            if self.metrics_port is not None:
                self.bound_metrics_port = start_metrics_server(self.metrics_port, self.metrics_host)
            self.logic.setup()
            self._publish_ready(started)
            phase = "step"
            self._loop()
        except Exception as error:
            if phase == "setup":
                # Setup fails on a bad source, path or port. The message names what to fix,
                # so the traceback goes to the debug log only.
                logger.error("Stage %s failed to start: %s", self.stage, error)
                logger.debug("Setup traceback of stage %s", self.stage, exc_info=True)
            else:
                logger.exception("Stage %s crashed in %s", self.stage, phase)
            exit_code = EXIT_CRASHED
        finally:
            set_stage_state(self.stage, "stopping")
            logger.info("Stage %s stopping: %s", self.stage, self._stop_reason or "error")
            self._remove_ready_file()
            try:
                self.logic.close()
            except Exception:
                logger.exception("Stage %s failed to close", self.stage)
                exit_code = EXIT_CRASHED
        logger.info("Stage %s stopped after %.1f s with exit code %d",
                    self.stage, time.monotonic() - started, exit_code)
        if self.handle_signals:
            # Python restores the default handlers while the interpreter shuts down, so a
            # repeated Ctrl-C arriving then would kill the stopped process with -SIGINT.
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_IGN)
        return exit_code

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            if not self.logic.step(self.step_timeout_s):
                self.request_stop("finished")
                return
        # The event may have been set from outside, without request_stop.
        self.request_stop("stop requested")

    def _install_signal_handlers(self) -> None:
        # The handlers stay installed after run() returns: a signal that arrives while the
        # interpreter exits must not turn a clean exit into a death by signal.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:
        # SIGTERM and SIGINT take the same path, and a repeated signal changes nothing.
        self.request_stop(f"received {signal.Signals(signum).name}")

    def _publish_ready(self, started: float) -> None:
        set_stage_state(self.stage, "ready")
        if self.ready_file is not None:
            self._write_ready_file()
        logger.info("Stage %s ready after %.2f s (metrics port %s)",
                    self.stage, time.monotonic() - started, self.bound_metrics_port)

    def _write_ready_file(self) -> None:
        path = Path(self.ready_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        content = {"stage": self.stage, "pid": os.getpid(), "metrics_port": self.bound_metrics_port,
                   "ready_time": time.time()}
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(content) + "\n")
        os.replace(temporary, path)

    def _remove_ready_file(self) -> None:
        if self.ready_file is None:
            return
        try:
            Path(self.ready_file).unlink(missing_ok=True)
        except OSError as error:
            logger.warning("Could not remove ready file %s: %s", self.ready_file, error)


def stop_with_supervisor() -> None:
    """Ask Linux to send this process SIGTERM when the supervisor that started it dies.

    Stages run in their own sessions, so without this a supervisor killed with
    SIGKILL would leave them running with no process to stop them. Does nothing for
    a stage started by hand or on another system.
    """
    supervisor_pid = os.environ.get(SUPERVISOR_PID_VARIABLE, "")
    if not supervisor_pid.isdigit() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        logger.warning("Cannot ask to be stopped with the supervisor (pid %s): %s", supervisor_pid,
                       os.strerror(ctypes.get_errno()))
        return
    if os.getppid() != int(supervisor_pid):
        logger.warning("Supervisor (pid %s) exited before this stage started; stopping", supervisor_pid)
        os.kill(os.getpid(), signal.SIGTERM)


def run_stage(logic: StageLogic, **options) -> int:
    """Run `logic` with a `StageRunner` built from `options` and return the exit code."""
    return StageRunner(logic, **options).run()


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options every stage process accepts: --config, --set and --ready-file."""
    add_config_arguments(parser)
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="file to write (JSON with pid and metrics port) once the stage is ready, "
                             "and to remove when it stops")


def read_ready_file(path: Path) -> dict | None:
    """Return the content of a ready file, or None while it does not exist."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
