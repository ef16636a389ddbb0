"""Fixtures for tests with real sockets and real processes: short ipc paths, tracked processes."""

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

REPO_ROOT = Path(__file__).resolve().parents[1]
PROCESS_SCRIPTS = Path(__file__).resolve().parent / "processes"


@pytest.fixture
def zmq_context():
    """A private ZeroMQ context; sockets left open are closed with linger 0 at teardown."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def ipc_dir():
    """A folder for ipc sockets. pytest's tmp_path can be too long: ipc paths are capped at 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="emo-ipc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ipc_endpoint(ipc_dir) -> Callable[[str], str]:
    """Return a function that gives a fresh `ipc://` endpoint for a channel name."""
    return lambda name: f"ipc://{ipc_dir / name}.ipc"


@pytest.fixture
def start_process():
    """Start a script from tests/processes with this Python; every process is ended at teardown."""
    started: list[subprocess.Popen] = []

    def start(script: str, *args: str, **popen_options) -> subprocess.Popen:
        options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "cwd": REPO_ROOT}
        options.update(popen_options)
        process = subprocess.Popen([sys.executable, str(PROCESS_SCRIPTS / script), *map(str, args)], **options)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def wait_until() -> Callable[..., bool]:
    """Return a function that polls `condition()` every 20 ms until it is true or `timeout_s` passed."""

    def wait(condition: Callable[[], object], timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.02)
        return bool(condition())

    return wait
