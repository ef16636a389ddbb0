"""What a user sees when `emotion-pipeline capture` gets a bad source: one clear line, an exit code, no hang.

Each case runs the real capture process. Sources that cannot be opened must end
with a non-zero exit code and a single error line naming the source and what to
do, without a traceback. Damaged videos that still hold frames are read up to
the damage, with the skipped frames counted.
"""

import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.schema import EndOfStream, Frame
from common.transport import Receiver

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI_TIMEOUT_S = 30

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed to make test videos")


def make_h264(path: Path, *, faststart: bool) -> Path:
    """Write 4 s of 25 fps H.264; with `faststart` the index comes first, so a cut file still opens."""
    command = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "4",
               "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"]
    if faststart:
        command += ["-movflags", "+faststart"]
    subprocess.run([*command, str(path)], check=True, timeout=120)
    return path


def random_bytes(count: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(count)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_capture(source: str, endpoint: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "common.cli", "capture", "--source", source, "--output", endpoint,
               "--metrics-port", "0", "--open-timeout", "3"]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


def check_rejected(result: subprocess.CompletedProcess, expected_code: int, *fragments: str) -> None:
    errors = error_lines(result.stderr)
    assert result.returncode == expected_code, result.stderr[-2000:]
    assert len(errors) == 1, f"expected one error line, got {errors}"
    for fragment in fragments:
        assert fragment in errors[0]
    assert "Traceback" not in result.stderr


def test_missing_path(tmp_path, ipc_endpoint):
    missing = tmp_path / "nowhere" / "clip.mp4"

    result = run_capture(str(missing), ipc_endpoint("frames"))

    check_rejected(result, 2, f"The source path {missing} does not exist", "Check the path")


def test_zero_length_file(tmp_path, ipc_endpoint):
    empty = tmp_path / "empty.mp4"
    empty.touch()

    result = run_capture(str(empty), ipc_endpoint("frames"))

    check_rejected(result, 2, f"The source file {empty} is empty (0 bytes)")


@needs_ffmpeg
def test_truncated_video_without_index(tmp_path, ipc_endpoint):
    # Cut in half, an MP4 whose index (moov) is written last has no index left to play from.
    whole = make_h264(tmp_path / "whole.mp4", faststart=False).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 2])

    result = run_capture(str(truncated), ipc_endpoint("frames"))

    check_rejected(result, 1, f"OpenCV cannot decode {truncated} as a video", "ffprobe")


def test_random_bytes_named_mp4(tmp_path, ipc_endpoint):
    path = tmp_path / "random.mp4"
    path.write_bytes(random_bytes(50_000, seed=1))

    result = run_capture(str(path), ipc_endpoint("frames"))

    check_rejected(result, 1, f"OpenCV cannot decode {path} as a video")


def test_image_with_unreadable_bytes(tmp_path, ipc_endpoint):
    # A real PNG signature makes OpenCV take the file for an image; the rest is noise.
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + random_bytes(3000, seed=2))

    result = run_capture(str(path), ipc_endpoint("frames"))

    check_rejected(result, 1, f"OpenCV cannot decode the image {path}", "Convert it to PNG or JPEG")


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_unreachable_url(scheme, ipc_endpoint):
    url = f"{scheme}://127.0.0.1:{closed_port()}/stream"

    started = time.monotonic()
    result = run_capture(url, ipc_endpoint("frames"))
    elapsed_s = time.monotonic() - started

    check_rejected(result, 1, f"Could not open the stream {url}", "that the server is running and reachable")
    assert elapsed_s < CLI_TIMEOUT_S


def receive_until_end(receiver: Receiver, timeout_s: float) -> tuple[list[Frame], EndOfStream | None]:
    frames, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = receiver.recv(timeout_ms=100)
        if isinstance(message, Frame):
            frames.append(message)
        elif isinstance(message, EndOfStream):
            return frames, message
    return frames, None


def run_capture_into(receiver: Receiver, source: Path, endpoint: str) -> tuple[list[Frame], EndOfStream | None,
                                                                                 subprocess.CompletedProcess]:
    command = [sys.executable, "-m", "common.cli", "capture", "--source", str(source), "--output", endpoint,
               "--metrics-port", "0"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        frames, end = receive_until_end(receiver, timeout_s=CLI_TIMEOUT_S)
        stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return frames, end, subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@needs_ffmpeg
def test_truncated_video_read_to_the_cut(tmp_path, zmq_context, ipc_endpoint):
    whole = make_h264(tmp_path / "whole.mp4", faststart=True).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 2])
    endpoint = ipc_endpoint("frames")

    with Receiver(endpoint, bind=True, hwm=4, stage="test", context=zmq_context) as receiver:
        frames, end, result = run_capture_into(receiver, truncated, endpoint)

    assert result.returncode == 0, result.stderr[-2000:]
    assert 0 < len(frames) < 100
    assert end is not None and end.reason == "end_of_file"
    assert "Traceback" not in result.stderr


@needs_ffmpeg
def test_corrupt_middle_skips_frames(tmp_path, zmq_context, ipc_endpoint):
    data = bytearray(make_h264(tmp_path / "whole.mp4", faststart=True).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = random_bytes(4000, seed=3)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    endpoint = ipc_endpoint("frames")

    with Receiver(endpoint, bind=True, hwm=4, stage="test", context=zmq_context) as receiver:
        frames, end, result = run_capture_into(receiver, corrupt, endpoint)

    assert result.returncode == 0, result.stderr[-2000:]
    assert end is not None
    assert "Traceback" not in result.stderr
    indices = [frame.frame_index for frame in frames]
    assert indices == sorted(set(indices))
    assert len(frames) > 0
