"""Capture sources, the capture stage over real ZeroMQ sockets and the capture process.

Every video and image is generated here. A frame's index is written into its
pixels as a flat gray level, so a test can tell which frame it got.
"""

import functools
import http.server
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from prometheus_client import REGISTRY

from capture.convert import to_bgr8
from capture.demo import DemoSource
from capture.factory import StreamOptions, create_source, open_source
from capture.live import (FFMPEG_OPTIONS_VARIABLE, LatestFrameReader, ReconnectPolicy, StreamSource, WebcamSource,
                          redact_url)
from capture.sources import ImageFileSource, ImageFolderSource, SourceError, VideoFileSource
from capture.stage import CaptureStage
from common.schema import MAX_FRAME_SIDE, EndOfStream, Frame
from common.transport import Receiver

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STREET_CLIP = SHARED / "media" / "street_phone_596x336.mp4"
REPO_ROOT = Path(__file__).resolve().parents[1]


def level_of(index: int) -> int:
    """Return the gray level of frame `index`; up to 30 frames fit in 8 bits."""
    return 20 + 8 * index


def write_video(path: Path, count: int, *, fps: float = 10.0, size: tuple[int, int] = (160, 120),
                fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for index in range(count):
        # Levels repeat after 30 frames, which only the longer stop test needs.
        writer.write(np.full((size[1], size[0], 3), level_of(index % 30), dtype=np.uint8))
    writer.release()
    return path


def read_all(source) -> list:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
        assert len(frames) <= 10_000, "the source never ended"
    return frames


def measured_level(pixels: np.ndarray) -> int:
    return round(float(pixels.mean()))


def index_from_level(pixels: np.ndarray) -> int:
    """Return the frame index written into the pixels; lossy codecs shift the level by less than 4."""
    return round((float(pixels.mean()) - level_of(0)) / 8)


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def http_folder(tmp_path):
    """Serve tmp_path over HTTP on a free loopback port; yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


# Video files


def test_video_file_every_frame_in_order(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 30)

    source = create_source(str(path))
    assert isinstance(source, VideoFileSource)
    with source:
        frames = read_all(source)
        assert source.read() is None

    assert [frame.frame_index for frame in frames] == list(range(30))
    assert [index_from_level(frame.pixels) for frame in frames] == list(range(30))
    assert all(frame.pixels.shape == (120, 160, 3) and frame.pixels.dtype == np.uint8 for frame in frames)
    assert source.fps == 10.0
    assert source.frames_skipped == 0
    capture_times = [frame.capture_time for frame in frames]
    assert capture_times == sorted(capture_times)


def test_video_file_corrupt_frame_skipped(tmp_path):
    # In MJPEG every frame is a separate JPEG, so wiping one makes exactly that frame undecodable.
    path = write_video(tmp_path / "clip.avi", 20, fourcc="MJPG")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 3) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == 20
    data[starts[7]:starts[8] - 8] = bytes(starts[8] - 8 - starts[7])
    path.write_bytes(data)

    with open_source(str(path)) as source:
        frames = read_all(source)

    indices = [frame.frame_index for frame in frames]
    assert indices == [i for i in range(20) if i != 7]
    assert source.frames_skipped == 1
    assert [index_from_level(frame.pixels) for frame in frames] == indices


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed, so no rotated file can be made")
def test_rotated_video_upright_like_ffmpeg(tmp_path):
    plain = tmp_path / "plain.mp4"
    writer = cv2.VideoWriter(str(plain), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 32))
    image = np.zeros((32, 64, 3), dtype=np.uint8)
    image[:8] = (0, 0, 255)  # a red top edge shows where "up" went
    image[:, :16] = (255, 255, 255)
    for _ in range(3):
        writer.write(image)
    writer.release()
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(plain), "-c", "copy", "-metadata:s:v", "rotate=90",
                    str(rotated)], check=True, timeout=60)
    reference = tmp_path / "reference.png"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(rotated), "-frames:v", "1", str(reference)],
                   check=True, timeout=60)

    with open_source(str(rotated)) as source:
        first = source.read()

    expected = cv2.imread(str(reference))
    assert first.pixels.shape == (64, 32, 3)
    assert expected.shape == first.pixels.shape
    assert np.abs(first.pixels.astype(int) - expected).mean() < 3


def test_street_clip_read_to_last_frame():
    if not STREET_CLIP.is_file():
        pytest.skip(f"the shared street clip is not at {STREET_CLIP}")

    with open_source(str(STREET_CLIP)) as source:
        frames = read_all(source)

    assert len(frames) == 115
    assert [frame.frame_index for frame in frames] == list(range(115))
    assert frames[-1].pixels.shape == (336, 596, 3)
    # The stream is 25 fps; OpenCV reports the average rate, 115 frames over the stream's 4.66 s.
    assert source.fps == pytest.approx(25, abs=0.5)
    assert source.frames_skipped == 0


# Images and folders


def test_image_file_one_frame(tmp_path):
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), np.full((40, 50, 3), 77, dtype=np.uint8))

    source = create_source(str(path))
    assert isinstance(source, ImageFileSource)
    with source:
        frames = read_all(source)

    assert len(frames) == 1
    assert frames[0].frame_index == 0
    assert frames[0].pixels.shape == (40, 50, 3)
    assert measured_level(frames[0].pixels) == 77
    assert source.fps is None


@pytest.mark.parametrize("name, pixels, expected_bgr", [
    ("gray8.png", np.full((10, 12), 90, dtype=np.uint8), (90, 90, 90)),
    ("gray16.png", np.full((10, 12), 200 * 256, dtype=np.uint16), (200, 200, 200)),
    ("color16.png", np.dstack([np.full((10, 12), v * 256, dtype=np.uint16) for v in (10, 20, 30)]), (10, 20, 30)),
    ("bgra.png", np.dstack([np.full((10, 12), v, dtype=np.uint8) for v in (40, 50, 60, 128)]), (40, 50, 60)),
])
def test_image_converted_to_bgr8(tmp_path, name, pixels, expected_bgr):
    path = tmp_path / name
    assert cv2.imwrite(str(path), pixels)

    with open_source(str(path)) as source:
        frame = source.read()

    assert frame.pixels.dtype == np.uint8
    assert frame.pixels.shape == (10, 12, 3)
    assert tuple(int(v) for v in frame.pixels[5, 5]) == expected_bgr


def test_to_bgr8_layouts():
    assert to_bgr8(np.zeros((4, 5, 1), dtype=np.uint8)).shape == (4, 5, 3)
    assert to_bgr8(np.full((4, 5, 3), 65535, dtype=np.uint16)).max() == 255
    with pytest.raises(ValueError, match="float32"):
        to_bgr8(np.zeros((4, 5, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(4, 5, 2\)"):
        to_bgr8(np.zeros((4, 5, 2), dtype=np.uint8))


def test_image_exif_orientation_applied(tmp_path):
    from PIL import Image

    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # EXIF orientation 6: the camera was turned, show the image rotated 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif.tobytes())

    with open_source(str(path)) as source:
        frame = source.read()

    assert frame.pixels.shape == (40, 20, 3)


def test_image_folder_natural_order_skips_unreadable(tmp_path, caplog):
    folder = tmp_path / "frames"
    folder.mkdir()
    for number in (1, 2, 10):
        cv2.imwrite(str(folder / f"frame{number}.png"), np.full((30, 40, 3), level_of(number), dtype=np.uint8))
    (folder / "frame3.png").write_bytes(b"this is not a PNG file" * 20)
    (folder / "notes.txt").write_text("not an image")
    cv2.imwrite(str(folder / ".hidden.png"), np.zeros((30, 40, 3), dtype=np.uint8))

    source = create_source(str(folder))
    assert isinstance(source, ImageFolderSource)
    with caplog.at_level(logging.WARNING, logger="capture.sources"), source:
        frames = read_all(source)

    assert [measured_level(frame.pixels) for frame in frames] == [level_of(1), level_of(2), level_of(10)]
    # Sorted list: frame1, frame2, frame3 (unreadable), frame10.
    assert [frame.frame_index for frame in frames] == [0, 1, 3]
    assert source.frames_skipped == 1
    assert "frame3.png" in caplog.text


def test_image_above_frame_limit(tmp_path):
    # A frame message carries at most MAX_FRAME_SIDE px on a side.
    wide = np.zeros((10, MAX_FRAME_SIDE + 8, 3), dtype=np.uint8)
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((30, 40, 3), 50, dtype=np.uint8))
    cv2.imwrite(str(folder / "b.png"), wide)
    cv2.imwrite(str(folder / "c.png"), np.full((30, 40, 3), 90, dtype=np.uint8))

    with create_source(str(folder)) as source:
        frames = read_all(source)

    assert [frame.frame_index for frame in frames] == [0, 2]
    assert source.frames_skipped == 1
    with pytest.raises(SourceError, match="above the limit"):
        open_source(str(folder / "b.png"))


def test_image_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")

    with pytest.raises(SourceError, match="contains no image files"):
        open_source(str(tmp_path))


# Bad sources


def test_missing_path_rejected(tmp_path):
    missing = tmp_path / "nowhere" / "clip.mp4"

    with pytest.raises(SourceError, match="does not exist") as raised:
        create_source(str(missing))
    assert str(missing) in str(raised.value)


def test_empty_file_rejected(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()

    with pytest.raises(SourceError, match=r"empty \(0 bytes\)") as raised:
        create_source(str(empty))
    assert str(empty) in str(raised.value)


@pytest.mark.parametrize("name", ["broken.mp4", "broken.png", "broken.bin"])
def test_undecodable_file_rejected(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"definitely not video data " * 40)

    with pytest.raises(SourceError, match="OpenCV") as raised:
        open_source(str(path))
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("spec", ["ftp://127.0.0.1/clip.mp4", "s3://bucket/clip.mp4", "udp://127.0.0.1:5000"])
def test_unsupported_scheme_rejected(spec):
    scheme = spec.split("://")[0]

    with pytest.raises(SourceError, match=f"Unsupported URL scheme '{scheme}'"):
        create_source(spec)


def test_file_url_opens_path(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 3)

    assert isinstance(create_source(path.as_uri()), VideoFileSource)


# Streams


def test_http_stream_every_frame(tmp_path, http_folder):
    write_video(tmp_path / "clip.mp4", 12)

    source = create_source(f"{http_folder}/clip.mp4", StreamOptions(open_timeout_s=5, read_timeout_s=5))
    assert isinstance(source, StreamSource)
    assert source.live
    with source:
        frames = read_all(source)

    assert [frame.frame_index for frame in frames] == list(range(12))
    assert [index_from_level(frame.pixels) for frame in frames] == list(range(12))


def test_rtsp_open_timeout(monkeypatch):
    monkeypatch.delenv(FFMPEG_OPTIONS_VARIABLE, raising=False)
    # A server that accepts the connection and never responds.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"rtsp://viewer:secret@127.0.0.1:{silent.getsockname()[1]}/stream"
        source = create_source(url, StreamOptions(open_timeout_s=1.0, read_timeout_s=1.0))

        started = time.monotonic()
        with pytest.raises(SourceError, match="within 1 s") as raised:
            source.open()
        elapsed = time.monotonic() - started

    assert elapsed < 10, f"opening took {elapsed:.1f} s despite a 1 s open timeout"
    assert "secret" not in str(raised.value)
    assert "viewer:***@127.0.0.1" in str(raised.value)
    assert os.environ[FFMPEG_OPTIONS_VARIABLE] == "rtsp_transport;tcp"


def test_rtsp_transport_override_kept(monkeypatch):
    monkeypatch.setenv(FFMPEG_OPTIONS_VARIABLE, "rtsp_transport;udp")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    source = create_source(f"rtsp://127.0.0.1:{port}/stream", StreamOptions(open_timeout_s=1.0))

    with pytest.raises(SourceError):
        source.open()

    assert os.environ[FFMPEG_OPTIONS_VARIABLE] == "rtsp_transport;udp"


def test_redact_url():
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"
    assert redact_url("http://127.0.0.1:8080/feed") == "http://127.0.0.1:8080/feed"


def test_latest_frame_reader_keeps_newest(tmp_path, http_folder, wait_until):
    write_video(tmp_path / "clip.mp4", 30)
    source = create_source(f"{http_folder}/clip.mp4", StreamOptions(open_timeout_s=5, read_timeout_s=5))
    source.open()
    reader = LatestFrameReader(source, reconnect=ReconnectPolicy(max_attempts=0))
    reader.start()
    try:
        # Nothing takes frames while the stream plays, so each one replaces the one before.
        assert wait_until(lambda: reader.finished, timeout_s=20)
        newest = reader.get(timeout_s=1)
        after_end = reader.get(timeout_s=0.1)
    finally:
        reader.stop(timeout_s=5)

    assert newest.frame_index == 29
    assert index_from_level(newest.pixels) == 29
    assert reader.stale_frames == 29
    assert after_end is None
    assert reader.ended
    assert reader.end_reason == "stream_ended"


# Webcams


def test_webcam_spec_parsing():
    # No camera is attached to the test machine, so only parsing and the errors are tested here;
    # reading a physical webcam cannot be tested.
    by_index = create_source("0")
    by_path = create_source("/dev/video2")

    assert isinstance(by_index, WebcamSource) and by_index.device == 0
    assert isinstance(by_path, WebcamSource) and by_path.device == Path("/dev/video2")
    assert by_index.live


def test_webcam_missing_device_rejected():
    with pytest.raises(SourceError, match="/dev/video97 does not exist"):
        open_source("/dev/video97")


def test_webcam_missing_index_rejected():
    with pytest.raises(SourceError, match="Could not open the webcam 63"):
        open_source("63")


# Demo


def test_demo_source_moving_face():
    source = create_source(None)
    assert isinstance(source, DemoSource)
    with source:
        frames = read_all(source)

    assert len(frames) == 75
    assert source.fps == 25.0
    assert all(frame.pixels.shape == (360, 640, 3) for frame in frames)
    assert not np.array_equal(frames[0].pixels, frames[37].pixels)

    from detector.haar import CascadeNotFoundError, HaarDetector
    try:
        detector = HaarDetector()
    except CascadeNotFoundError as error:
        pytest.skip(f"no Haar cascade to check the demo face with: {error}")
    face_lefts = []
    for frame in frames[::5]:
        faces = detector.detect(frame.pixels)
        assert len(faces) == 1, f"expected one face in demo frame {frame.frame_index}, found {len(faces)}"
        face_lefts.append(faces[0].x)
    assert max(face_lefts) - min(face_lefts) > 200, f"the face barely moves: left edges {face_lefts}"


# The capture stage over ZeroMQ


def close_and_receive(stage: CaptureStage, receiver: Receiver, received: list, deadline: float) -> None:
    """Close `stage` on a thread and receive until its end of stream arrives or `deadline` (monotonic) passes."""
    closing = threading.Thread(target=stage.close)
    closing.start()
    while time.monotonic() < deadline and not (received and isinstance(received[-1], EndOfStream)):
        if (message := receiver.recv(timeout_ms=100)) is not None:
            received.append(message)
    closing.join(timeout=10)


def test_capture_stage_file_backpressure(tmp_path, ipc_endpoint):
    path = write_video(tmp_path / "clip.mp4", 25)
    endpoint = ipc_endpoint("frames")
    received = []
    context = zmq.Context()
    try:
        # A receive queue of 1 or 2 messages sometimes loses the last messages when the peer
        # closes (libzmq, seen in 3 of 40 runs), so these tests use 4, the detector's default.
        with Receiver(endpoint, bind=True, hwm=4, stage="test", context=context) as receiver:
            # The stage uses a context of its own, as in its process, so close() drains the queue.
            stage = CaptureStage(create_source(str(path)), endpoint, source_id="file-backpressure", hwm=1)
            stage.setup()
            deadline = time.monotonic() + 30
            running = True
            while running and time.monotonic() < deadline:
                running = stage.step(0.01)
                # One message per step keeps the queue full, so the stage must wait instead of dropping.
                if (message := receiver.recv(timeout_ms=5)) is not None:
                    received.append(message)

            # The last frames and the end of stream are still queued when the stage closes.
            close_and_receive(stage, receiver, received, deadline)
    finally:
        context.destroy(linger=0)

    frames = [message for message in received if isinstance(message, Frame)]
    assert not running
    assert [frame.frame_index for frame in frames] == list(range(25))
    assert isinstance(received[-1], EndOfStream)
    assert received[-1].frame_index == 25
    assert received[-1].reason == "end_of_file"
    assert frames[0].fps == 10.0
    assert all("capture.sent" in frame.timestamps for frame in frames)
    assert metric("emotion_frames_total", stage="capture", source="file-backpressure") == 25
    assert metric("emotion_frames_dropped_total", stage="capture", source="file-backpressure",
                  reason="downstream_full") == 0


def test_capture_stage_close_delivers_queue(tmp_path, ipc_endpoint):
    # Guards against closing with linger 0, which discarded the frames still queued
    # in the stage and the end of stream behind them.
    path = write_video(tmp_path / "clip.mp4", 20)
    endpoint = ipc_endpoint("frames")
    context = zmq.Context()
    received = []
    try:
        with Receiver(endpoint, bind=True, hwm=4, stage="test", context=context) as receiver:
            stage = CaptureStage(create_source(str(path)), endpoint, source_id="drain", hwm=32)
            stage.setup()
            deadline = time.monotonic() + 30
            while stage.step(0.05) and time.monotonic() < deadline:
                pass
            close_and_receive(stage, receiver, received, deadline)
    finally:
        context.destroy(linger=0)

    assert [message.frame_index for message in received if isinstance(message, Frame)] == list(range(20))
    assert isinstance(received[-1], EndOfStream)


def test_capture_stage_warns_without_detector(tmp_path, zmq_context, ipc_endpoint, monkeypatch, caplog):
    monkeypatch.setattr("capture.stage.BLOCKED_WARNING_S", 0.2)
    path = write_video(tmp_path / "clip.mp4", 20)
    stage = CaptureStage(create_source(str(path)), ipc_endpoint("nobody-binds"), source_id="alone", hwm=4,
                         context=zmq_context)
    stage.setup()
    try:
        with caplog.at_level(logging.WARNING, logger="capture.stage"):
            deadline = time.monotonic() + 5
            while "has not taken a frame" not in caplog.text and time.monotonic() < deadline:
                assert stage.step(0.05)
    finally:
        stage.close()

    assert "The detector at ipc://" in caplog.text
    # ZeroMQ queues up to the high-water mark of frames before any detector connects.
    assert stage.frames_sent <= 4


def test_capture_stage_realtime_pacing(tmp_path, zmq_context, ipc_endpoint):
    path = write_video(tmp_path / "clip.mp4", 6, fps=20)
    endpoint = ipc_endpoint("frames")
    with Receiver(endpoint, bind=True, hwm=16, stage="test", context=zmq_context) as receiver:
        stage = CaptureStage(create_source(str(path)), endpoint, source_id="realtime", realtime=True,
                             hwm=16, context=zmq_context)
        stage.setup()
        try:
            deadline = time.monotonic() + 20
            while stage.step(0.05) and time.monotonic() < deadline:
                pass
        finally:
            stage.close()
        messages = []
        while (message := receiver.recv(timeout_ms=1000)) is not None:
            messages.append(message)

    frames = [message for message in messages if isinstance(message, Frame)]
    sent_times = [frame.timestamps["capture.sent"] for frame in frames]
    assert len(sent_times) == 6
    # Six frames at 20 fps span 5 intervals of 50 ms.
    assert sent_times[-1] - sent_times[0] >= 0.24
    # The capture time is the frame's due time, not when it was decoded ahead of it.
    assert max(frame.timestamps["capture.sent"] - frame.capture_time for frame in frames) < 0.02


def test_capture_stage_live_drops_counted(tmp_path, http_folder, zmq_context, ipc_endpoint, wait_until):
    write_video(tmp_path / "clip.mp4", 30)
    endpoint = ipc_endpoint("frames")
    source_id = "live-drops"
    with Receiver(endpoint, bind=True, hwm=1, stage="test", context=zmq_context) as receiver:
        source = create_source(f"{http_folder}/clip.mp4", StreamOptions(open_timeout_s=5, read_timeout_s=5))
        stage = CaptureStage(source, endpoint, source_id=source_id, hwm=1, reconnect=ReconnectPolicy(max_attempts=0),
                             context=zmq_context)
        stage.setup()
        received = []
        try:
            # Step without reading until the whole stream was read, so the queue fills up.
            assert wait_until(lambda: not stage.step(0.01) or source.frames_read == 30, timeout_s=20)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                running = stage.step(0.01)
                while (message := receiver.recv(timeout_ms=20)) is not None:
                    received.append(message)
                if not running and received and isinstance(received[-1], EndOfStream):
                    break
        finally:
            stage.close()

    frames = [message for message in received if isinstance(message, Frame)]
    stale = metric("emotion_frames_dropped_total", stage="capture", source=source_id, reason="stale")
    full = metric("emotion_frames_dropped_total", stage="capture", source=source_id, reason="downstream_full")
    assert isinstance(received[-1], EndOfStream)
    assert received[-1].reason == "stream_ended"
    assert len(frames) == stage.frames_sent
    assert stale + full > 0
    assert len(frames) + stale + full == 30, "every frame read must be sent or counted as dropped"
    indices = [frame.frame_index for frame in frames]
    assert indices == sorted(indices)


# The capture process


def run_cli(*args: str, **options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "common.cli", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **options)


def test_capture_process_sends_file_then_exits(tmp_path, zmq_context, ipc_endpoint):
    path = write_video(tmp_path / "clip.mp4", 15)
    endpoint = ipc_endpoint("frames")
    with Receiver(endpoint, bind=True, hwm=4, stage="test", context=zmq_context) as receiver:
        process = run_cli("capture", "--source", str(path), "--source-id", "cam-7", "--output", endpoint,
                          "--metrics-port", "0")
        try:
            received = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (received and isinstance(received[-1], EndOfStream)):
                if (message := receiver.recv(timeout_ms=100)) is not None:
                    received.append(message)
            _, stderr = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()

    assert process.returncode == 0, stderr
    assert [m.frame_index for m in received if isinstance(m, Frame)] == list(range(15))
    assert {m.source_id for m in received} == {"cam-7"}
    assert received[-1].frame_index == 15
    assert "[capture cam-7]" in stderr


def test_capture_process_stop_sends_end_of_stream(tmp_path, zmq_context, ipc_endpoint):
    path = write_video(tmp_path / "clip.mp4", 50, fps=25)
    endpoint = ipc_endpoint("frames")
    with Receiver(endpoint, bind=True, hwm=4, stage="test", context=zmq_context) as receiver:
        process = run_cli("capture", "--source", str(path), "--output", endpoint, "--realtime",
                          "--metrics-port", "0")
        try:
            first = receiver.recv(timeout_ms=20_000)
            process.send_signal(signal.SIGTERM)
            received = [first]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not isinstance(received[-1], EndOfStream):
                if (message := receiver.recv(timeout_ms=100)) is not None:
                    received.append(message)
            _, stderr = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()

    assert isinstance(first, Frame)
    assert process.returncode == 0, stderr
    assert isinstance(received[-1], EndOfStream)
    assert received[-1].reason == "stopped"
    assert received[-1].frame_index < 50


@pytest.mark.parametrize("spec, expected", [
    ("/no/such/clip.mp4", "/no/such/clip.mp4 does not exist"),
    ("gopher://127.0.0.1/clip", "Unsupported URL scheme 'gopher'"),
])
def test_capture_process_bad_source(spec, expected, ipc_endpoint):
    process = run_cli("capture", "--source", spec, "--output", ipc_endpoint("frames"), "--metrics-port", "0")
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 2
    assert expected in stderr
