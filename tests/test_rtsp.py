"""Live capture against a real RTSP server: streaming, server restarts, stalls and overload.

The server is tests/rtsp_server.py, run with the system Python because the
GStreamer RTSP bindings come from Debian packages, not from PyPI. It serves an
H.264 file made here with ffmpeg on 127.0.0.1 at the file's real-time pace.
"""

import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from prometheus_client import REGISTRY

from capture.factory import StreamOptions, create_source
from capture.live import FFMPEG_OPTIONS_VARIABLE, ReconnectPolicy
from capture.stage import CaptureStage
from common.metrics import scrape_metrics
from common.schema import EndOfStream, Frame
from common.stage import read_ready_file
from common.transport import Receiver, free_tcp_ports

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
STREET_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "street_phone_596x336.mp4"
GSTREAMER_CHECK = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
                   "from gi.repository import Gst, GstRtspServer")


def gstreamer_problem() -> str | None:
    """Return why the RTSP server cannot run here, or None when it can."""
    if shutil.which("ffmpeg") is None:
        return "ffmpeg is not installed, so no H.264 test video can be made"
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} is missing; the RTSP server needs the system Python with GStreamer"
    check = subprocess.run([SYSTEM_PYTHON, "-c", GSTREAMER_CHECK], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        return (f"{SYSTEM_PYTHON} lacks the GStreamer RTSP bindings (install python3-gi, gir1.2-gst-rtsp-server-1.0, "
                f"gstreamer1.0-plugins-good and -bad): {check.stderr.strip().splitlines()[-1:]}")
    return None


_problem = gstreamer_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=_problem or "")


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def source_state(source_id: str) -> str | None:
    """Return the state `emotion_source_state` shows for `source_id`, or None when none is set."""
    for state in ("connecting", "streaming", "stalled", "reconnecting", "ended"):
        if metric("emotion_source_state", source=source_id, state=state) == 1:
            return state
    return None


class RtspServer:
    """One tests/rtsp_server.py process serving `video` on 127.0.0.1."""

    def __init__(self, video: Path, port: int = 0):
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(SERVER_SCRIPT), "--video", str(video), "--port", str(port)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self._read_url(timeout_s=20)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def _read_url(self, timeout_s: float) -> str:
        readable, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if readable else ""
        if not line.startswith("ready "):
            self.kill()
            stderr = self.process.stderr.read()
            raise AssertionError(f"the RTSP server did not start within {timeout_s} s: {line!r} {stderr[-2000:]}")
        return line.split()[1]

    def pause(self) -> None:
        """Stop the process without closing its sockets, as a hung camera does."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()


@pytest.fixture
def rtsp_servers():
    """Return a function that starts an RTSP server; every server is killed at teardown."""
    started: list[RtspServer] = []

    def start(video: Path, port: int = 0) -> RtspServer:
        server = RtspServer(video, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="module")
def h264_video(tmp_path_factory) -> Path:
    """A 20 s, 25 fps H.264 MP4 with a key frame every second, long enough for every test to stay inside it."""
    path = tmp_path_factory.mktemp("rtsp") / "pattern.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "20",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", str(path)],
                   check=True, timeout=120)
    return path


class StagePump:
    """Drive a CaptureStage in the test's thread and collect what reaches the detector's socket."""

    def __init__(self, stage: CaptureStage, receiver: Receiver):
        self.stage = stage
        self.receiver = receiver
        self.frames: list[tuple[Frame, float]] = []  # (frame, Unix seconds when received)
        self.ended: EndOfStream | None = None

    def run_until(self, condition, timeout_s: float, *, consume: bool = True) -> bool:
        """Step the stage, and receive when `consume`, until `condition()` is true or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.stage.step(0.02)
            if consume:
                self.receive_all()
            if condition():
                return True
        return bool(condition())

    def receive_all(self) -> None:
        while (message := self.receiver.recv(timeout_ms=0)) is not None:
            if isinstance(message, Frame):
                self.frames.append((message, time.time()))
            elif isinstance(message, EndOfStream):
                self.ended = message


def start_stage(url: str, endpoint: str, source_id: str, context: zmq.Context, *, transport: str = "tcp",
                stall_timeout_s: float = 5.0, hwm: int = 4) -> CaptureStage:
    options = StreamOptions(open_timeout_s=3.0, read_timeout_s=stall_timeout_s, rtsp_transport=transport)
    stage = CaptureStage(create_source(url, options), endpoint, source_id=source_id, hwm=hwm,
                         reconnect=ReconnectPolicy(delay_s=0.2, max_delay_s=1.0), stall_timeout_s=stall_timeout_s,
                         context=context)
    stage.setup()
    return stage


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_stream_frames_arrive(h264_video, rtsp_servers, transport, zmq_context, ipc_endpoint, monkeypatch):
    monkeypatch.delenv(FFMPEG_OPTIONS_VARIABLE, raising=False)
    server = rtsp_servers(h264_video)
    endpoint = ipc_endpoint("frames")
    source_id = f"rtsp-{transport}"
    with Receiver(endpoint, bind=True, hwm=64, stage="test", context=zmq_context) as receiver:
        stage = start_stage(server.url, endpoint, source_id, zmq_context, transport=transport)
        pump = StagePump(stage, receiver)
        try:
            arrived = pump.run_until(lambda: len(pump.frames) >= 25, timeout_s=20)
            state = source_state(source_id)
        finally:
            stage.close()

    assert arrived, f"only {len(pump.frames)} frames arrived over RTSP/{transport} in 20 s"
    assert state == "streaming"
    assert os.environ[FFMPEG_OPTIONS_VARIABLE] == f"rtsp_transport;{transport}"
    first = pump.frames[0][0]
    assert first.pixels.shape == (120, 160, 3)
    assert first.fps == pytest.approx(25)
    indices = [frame.frame_index for frame, _ in pump.frames]
    assert indices == sorted(indices)
    assert source_state(source_id) == "ended"


def test_rtsp_server_restart_resumes(h264_video, rtsp_servers, zmq_context, ipc_endpoint, caplog):
    caplog.set_level(logging.INFO, logger="capture.live")
    server = rtsp_servers(h264_video)
    endpoint = ipc_endpoint("frames")
    source_id = "rtsp-restart"
    reconnects_before = metric("emotion_source_reconnects_total", source=source_id)
    with Receiver(endpoint, bind=True, hwm=64, stage="test", context=zmq_context) as receiver:
        stage = start_stage(server.url, endpoint, source_id, zmq_context)
        pump = StagePump(stage, receiver)
        try:
            assert pump.run_until(lambda: len(pump.frames) >= 10, timeout_s=20), "no frames before the restart"
            server.kill()
            assert pump.run_until(lambda: source_state(source_id) == "reconnecting", timeout_s=10), \
                f"state after the server died: {source_state(source_id)}"
            frames_before = len(pump.frames)

            restarted = rtsp_servers(h264_video, port=server.port)
            restart_time = time.time()
            resumed = pump.run_until(lambda: len(pump.frames) >= frames_before + 10, timeout_s=15)
            state = source_state(source_id)
        finally:
            stage.close()

    assert restarted.port == server.port
    assert resumed, "no frames arrived after the server came back on the same port"
    # The reopen waits at most the 1 s backoff cap, then opening the stream takes about 1 s.
    first_new = min(frame.capture_time for frame, _ in pump.frames[frames_before:])
    assert first_new - restart_time < 1.0 + 3.0
    assert state == "streaming"
    assert metric("emotion_source_reconnects_total", source=source_id) > reconnects_before
    assert "Source rtsp-restart is reconnecting (was streaming)" in caplog.text
    assert "Source rtsp-restart is streaming (was reconnecting)" in caplog.text
    indices = [frame.frame_index for frame, _ in pump.frames]
    assert indices == sorted(set(indices)), "frame indices must keep counting up across a reconnect"


def test_rtsp_stall_detected_and_recovered(h264_video, rtsp_servers, zmq_context, ipc_endpoint, caplog):
    server = rtsp_servers(h264_video)
    endpoint = ipc_endpoint("frames")
    source_id = "rtsp-stall"
    stall_timeout_s = 1.5
    with Receiver(endpoint, bind=True, hwm=64, stage="test", context=zmq_context) as receiver:
        stage = start_stage(server.url, endpoint, source_id, zmq_context, stall_timeout_s=stall_timeout_s)
        pump = StagePump(stage, receiver)
        try:
            assert pump.run_until(lambda: len(pump.frames) >= 10, timeout_s=20), "no frames before the stall"
            server.pause()
            paused_at = time.monotonic()
            lost = pump.run_until(lambda: source_state(source_id) in ("stalled", "reconnecting"),
                                  timeout_s=stall_timeout_s + 3)
            lost_after_s = time.monotonic() - paused_at
            # The blocked read returns once FFmpeg's read timeout fires, and the reader reopens.
            reconnecting = pump.run_until(lambda: source_state(source_id) == "reconnecting",
                                          timeout_s=stall_timeout_s + 5)
            reconnecting_after_s = time.monotonic() - paused_at
            frames_before = len(pump.frames)

            server.resume()
            resumed = pump.run_until(lambda: len(pump.frames) >= frames_before + 10, timeout_s=15)
        finally:
            stage.close()

    assert lost, f"the source was still {source_state(source_id)} {stall_timeout_s + 3} s into the stall"
    assert stall_timeout_s - 0.5 <= lost_after_s < stall_timeout_s + 1.5
    assert reconnecting, "the read blocked on the stalled server never returned"
    assert reconnecting_after_s < 2 * stall_timeout_s + 2
    assert resumed, "no frames arrived after the stalled server continued"
    assert "Source rtsp-stall is stalled (was streaming): no frame for" in caplog.text
    assert "Source rtsp-stall is reconnecting (was stalled)" in caplog.text


def test_rtsp_faster_than_consumer_latency_bounded(h264_video, rtsp_servers, zmq_context, ipc_endpoint):
    server = rtsp_servers(h264_video)
    endpoint = ipc_endpoint("frames")
    source_id = "rtsp-overload"
    consume_every_s = 0.2  # 5 frames per second taken from a 25 fps stream
    hwm = 4
    with Receiver(endpoint, bind=True, hwm=hwm, stage="test", context=zmq_context) as receiver:
        stage = start_stage(server.url, endpoint, source_id, zmq_context, hwm=hwm)
        pump = StagePump(stage, receiver)
        try:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                # Step without receiving for a while, then take one frame: a consumer at 5 fps.
                next_take = time.monotonic() + consume_every_s
                pump.run_until(lambda: time.monotonic() >= next_take, timeout_s=consume_every_s, consume=False)
                if (message := receiver.recv(timeout_ms=0)) is not None and isinstance(message, Frame):
                    pump.frames.append((message, time.time()))
        finally:
            stage.close()

    stale = metric("emotion_frames_dropped_total", stage="capture", source=source_id, reason="stale")
    full = metric("emotion_frames_dropped_total", stage="capture", source=source_id, reason="downstream_full")
    latencies = [received - frame.capture_time for frame, received in pump.frames]
    assert len(latencies) >= 20
    assert full > 0, "the full queue toward the detector must be counted as downstream_full drops"
    assert stale + full + len(pump.frames) <= stage.source.frames_read
    # A frame waits behind at most the sender's and the receiver's queues (4 + 4 frames) and the
    # few more ZeroMQ queues beyond its high-water marks (10 in all with pyzmq 27.3), taken one
    # per 0.2 s. An unbounded queue would instead let the latency grow toward the 8 s of the run.
    bound_s = (2 * hwm + 4) * consume_every_s
    assert max(latencies) < bound_s
    assert max(latencies[-10:]) < max(latencies[10:20]) + consume_every_s, "latency grew while the run went on"


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    # The last line may still be half written.
    return [json.loads(line) for line in lines[:-1] if line.strip()]


@pytest.mark.slow
def test_rtsp_pipeline_labels_faces_after_restart(rtsp_servers, tmp_path, ipc_dir):
    if not STREET_CLIP.is_file():
        pytest.skip(f"the street clip with one face per frame is not at {STREET_CLIP}")
    server = rtsp_servers(STREET_CLIP)
    run_dir, events_path = tmp_path / "run", tmp_path / "events.jsonl"
    capture_port, detector_port, sink_port, classifier_port = free_tcp_ports(4)
    overrides = [
        f"endpoints.frames='ipc://{ipc_dir}/frames.ipc'", f"endpoints.crops='ipc://{ipc_dir}/crops.ipc'",
        f"endpoints.results='ipc://{ipc_dir}/results.ipc'",
        f"metrics.capture={capture_port}", f"metrics.detector={detector_port}", f"metrics.sink={sink_port}",
        f"metrics.classifier={classifier_port}",
        "capture.reconnect_delay_s=0.2", "capture.reconnect_max_delay_s=1.0", "capture.open_timeout_s=3.0",
    ]
    command = [sys.executable, "-m", "common.cli", "run", "--run-dir", str(run_dir), "--source", server.url,
               "--events", str(events_path)]
    for override in overrides:
        command += ["--set", override]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def classified_after(start: float) -> list[dict]:
        return [event for event in read_events(events_path)
                if event["status"] == "classified" and event["capture_time"] > start]

    def wait_for(condition, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            if condition():
                return True
            time.sleep(0.1)
        return bool(condition())

    try:
        assert wait_for(lambda: len(classified_after(0)) >= 5, timeout_s=120), "no labelled faces from the stream"
        capture_metrics_port = read_ready_file(run_dir / "capture.ready")["metrics_port"]
        server.kill()
        assert wait_for(lambda: 'state="reconnecting"} 1.0' in scrape_metrics(capture_metrics_port), timeout_s=10)

        rtsp_servers(STREET_CLIP, port=server.port)
        restarted_at = time.time()
        assert wait_for(lambda: len(classified_after(restarted_at)) >= 5, timeout_s=30), \
            "no labelled faces after the server came back"
        capture_metrics = scrape_metrics(capture_metrics_port)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            stderr = process.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            process.kill()
            stderr = process.communicate()[1]

    assert process.returncode == 0, stderr[-3000:]
    assert 'emotion_source_state{source="source0",state="streaming"} 1.0' in capture_metrics
    events = classified_after(restarted_at)
    assert {event["emotion"] for event in events} <= {"angry", "disgust", "fear", "happy", "sad", "surprise",
                                                       "neutral"}
    assert max(event["latency_ms"] for event in events) < 5000
