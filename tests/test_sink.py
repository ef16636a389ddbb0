"""The sink: joiner, annotator, recorder, events, the stage over real ZeroMQ sockets and the sink process."""

import dataclasses
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from classifier.labels import EMOTIONS
from common.schema import Classifications, DetectedFrame, EndOfStream, decode, empty_boxes, encode
from common.stage import read_ready_file
from common.transport import Sender
from sink.annotate import EMOTION_COLORS, Annotator
from sink.display import Display, DisplayError
from sink.events import EventWriter
from sink.joiner import FrameJoiner, JoinedFrame
from sink.recorder import Recorder, RecorderError
from sink.stage import SinkStage

REPO_ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0  # a fixed Unix time, so joiner tests pass their own clock


def boxes_of(*boxes) -> np.ndarray:
    return np.array(boxes, dtype=np.int32).reshape(-1, 4)


def detected(index: int, *boxes, source: str = "cam", size: tuple[int, int] = (160, 120),
             capture_time: float = T0, fps: float | None = 10.0, pixels: np.ndarray | None = None) -> DetectedFrame:
    if pixels is None:
        pixels = np.full((size[1], size[0], 3), 40 + (index % 20) * 10, dtype=np.uint8)
    return DetectedFrame(source_id=source, frame_index=index, capture_time=capture_time, timestamps={},
                         pixels=pixels, fps=fps, boxes=boxes_of(*boxes) if boxes else empty_boxes())


def classified(index: int, *faces, source: str = "cam", worker: str = "worker-0") -> Classifications:
    """Build classifications from (box, emotion) pairs; the emotion gets probability 0.7."""
    rows = []
    for _, emotion in faces:
        row = np.full(len(EMOTIONS), 0.05, dtype=np.float32)
        row[EMOTIONS.index(emotion)] = 0.7
        rows.append(row)
    return Classifications(source_id=source, frame_index=index, capture_time=T0, timestamps={},
                           boxes=boxes_of(*(box for box, _ in faces)),
                           probabilities=np.array(rows, dtype=np.float32).reshape(-1, len(EMOTIONS)),
                           labels=list(EMOTIONS), worker_id=worker)


def top_emotions(joined: JoinedFrame) -> list[str | None]:
    return [joined.labels[int(np.argmax(row))] if joined.classified(face) else None
            for face, row in enumerate(joined.probabilities)]


def released_indices(frames: list[JoinedFrame]) -> list[int]:
    return [joined.frame_index for joined in frames]


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def video_properties(path: Path) -> tuple[int, int, int, float]:
    """Return (frames decoded, width, height, fps) of a video file."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"OpenCV cannot open {path}"
    frames = 0
    while capture.read()[0]:
        frames += 1
    result = (frames, int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
              capture.get(cv2.CAP_PROP_FPS))
    capture.release()
    return result


FACE_A = (10, 10, 40, 40)
FACE_B = (80, 20, 30, 30)


# Joiner


def test_joiner_out_of_order_classifications():
    joiner = FrameJoiner(timeout_s=5)
    for index in range(3):
        joiner.add_frame(detected(index, FACE_A), now=T0)

    joiner.add_classifications(classified(2, (FACE_A, "sad")), now=T0)
    after_2 = joiner.pop_ready(now=T0)
    joiner.add_classifications(classified(0, (FACE_A, "happy")), now=T0)
    after_0 = joiner.pop_ready(now=T0)
    joiner.add_classifications(classified(1, (FACE_A, "angry")), now=T0)
    after_1 = joiner.pop_ready(now=T0)

    assert after_2 == []
    assert released_indices(after_0) == [0]
    assert released_indices(after_1) == [1, 2]
    assert [top_emotions(joined) for joined in after_0 + after_1] == [["happy"], ["angry"], ["sad"]]
    assert not any(joined.timed_out for joined in after_0 + after_1)


def test_joiner_classifications_before_frame():
    joiner = FrameJoiner(timeout_s=5)

    joiner.add_classifications(classified(0, (FACE_A, "fear")), now=T0)
    before = joiner.pop_ready(now=T0)
    joiner.add_frame(detected(0, FACE_A), now=T0 + 0.1)
    after = joiner.pop_ready(now=T0 + 0.1)

    assert before == []
    assert released_indices(after) == [0]
    assert top_emotions(after[0]) == ["fear"]


def test_joiner_split_classifications_matched_by_box():
    joiner = FrameJoiner(timeout_s=5)
    joiner.add_frame(detected(0, FACE_A, FACE_B), now=T0)

    joiner.add_classifications(classified(0, (FACE_B, "surprise"), worker="worker-1"), now=T0)
    partial = joiner.pop_ready(now=T0)
    joiner.add_classifications(classified(0, (FACE_A, "neutral"), worker="worker-2"), now=T0)
    complete = joiner.pop_ready(now=T0)

    assert partial == []
    assert top_emotions(complete[0]) == ["neutral", "surprise"]


def test_joiner_frame_without_faces():
    joiner = FrameJoiner(timeout_s=5)

    joiner.add_frame(detected(0), now=T0)
    alone = joiner.pop_ready(now=T0)
    joiner.add_frame(detected(1, FACE_A), now=T0)
    joiner.add_frame(detected(2), now=T0)
    behind_earlier_frame = joiner.pop_ready(now=T0)
    joiner.add_classifications(classified(1, (FACE_A, "happy")), now=T0)
    after = joiner.pop_ready(now=T0)

    assert released_indices(alone) == [0]
    assert behind_earlier_frame == []
    assert released_indices(after) == [1, 2]


def test_joiner_timeout_releases_unclassified():
    drops = []
    joiner = FrameJoiner(timeout_s=0.5, on_drop=lambda *drop: drops.append(drop))
    joiner.add_frame(detected(0, FACE_A, FACE_B), now=T0)
    joiner.add_classifications(classified(0, (FACE_B, "sad")), now=T0)

    before_timeout = joiner.pop_ready(now=T0 + 0.49)
    at_timeout = joiner.pop_ready(now=T0 + 0.5)
    joiner.add_classifications(classified(0, (FACE_A, "happy")), now=T0 + 0.6)

    assert before_timeout == []
    assert released_indices(at_timeout) == [0]
    assert at_timeout[0].timed_out
    assert top_emotions(at_timeout[0]) == [None, "sad"]
    assert joiner.dropped[("cam", "classification_timeout")] == 1
    assert drops == [("cam", 0, "classification_timeout")]
    assert joiner.discarded_classifications == 1, "classifications after the release must be discarded"


def test_joiner_memory_bound():
    joiner = FrameJoiner(timeout_s=5, max_frames=3)
    for index in range(5):
        joiner.add_frame(detected(index, FACE_A), now=T0 + index)

    held_count = joiner.held_frames
    for index in range(5):
        joiner.add_classifications(classified(index, (FACE_A, "happy")), now=T0 + 5)
    released = joiner.pop_ready(now=T0 + 5)

    assert held_count == 3
    assert joiner.dropped[("cam", "joiner_full")] == 2
    assert released_indices(released) == [2, 3, 4]
    assert joiner.discarded_classifications == 2, "classifications of the dropped frames must be discarded"


def test_joiner_early_classifications_bounded():
    joiner = FrameJoiner(timeout_s=1, max_frames=3)
    for index in range(10):
        joiner.add_classifications(classified(index, (FACE_A, "happy")), now=T0)

    joiner.pop_ready(now=T0 + 1)

    assert joiner.discarded_classifications == 10  # 7 over the bound, then 3 expired


def test_joiner_source_restart():
    joiner = FrameJoiner(timeout_s=5)
    for index in range(3):
        boxes = (FACE_A,) if index == 2 else ()
        joiner.add_frame(detected(index, *boxes), now=T0)
    first_run = joiner.pop_ready(now=T0)

    # Capture restarted after a crash: the indices begin at 0 again.
    joiner.add_frame(detected(0), now=T0 + 1)
    joiner.add_frame(detected(1), now=T0 + 1)
    second_run = joiner.pop_ready(now=T0 + 1)

    assert released_indices(first_run) == [0, 1]
    assert released_indices(second_run) == [0, 1]
    assert joiner.dropped[("cam", "source_restarted")] == 1
    assert joiner.held_frames == 0


def test_joiner_sources_independent():
    joiner = FrameJoiner(timeout_s=5)
    joiner.add_frame(detected(0, FACE_A, source="left"), now=T0)
    joiner.add_frame(detected(0, source="right"), now=T0)

    released = joiner.pop_ready(now=T0)

    assert [(joined.source_id, joined.frame_index) for joined in released] == [("right", 0)]


def test_joiner_end_of_stream_after_held_frames():
    joiner = FrameJoiner(timeout_s=5)
    joiner.add_frame(detected(0, FACE_A), now=T0)
    joiner.add_end_of_stream(EndOfStream(source_id="cam", frame_index=1, capture_time=T0, timestamps={},
                                         reason="end_of_file"))

    ended_while_held = joiner.ended("cam")
    joiner.add_classifications(classified(0, (FACE_A, "happy")), now=T0)
    joiner.pop_ready(now=T0)

    assert not ended_while_held
    assert joiner.ended("cam")
    assert not joiner.ended("other")


# Annotator


def read_only_frame(*boxes, size=(640, 360), rejected=()) -> DetectedFrame:
    """Return a frame as a receiver decodes it: with read-only pixels."""
    frame = DetectedFrame(source_id="cam", frame_index=0, capture_time=T0, timestamps={},
                          pixels=np.full((size[1], size[0], 3), 90, dtype=np.uint8), fps=25.0,
                          boxes=boxes_of(*boxes) if boxes else empty_boxes(),
                          rejected_boxes=boxes_of(*(box for box, _ in rejected)) if rejected else empty_boxes(),
                          rejected_reasons=[reason for _, reason in rejected])
    return decode(encode(frame))


def joined_with(frame: DetectedFrame, *emotions: str | None) -> JoinedFrame:
    probabilities = np.full((len(frame.boxes), len(EMOTIONS)), np.nan, dtype=np.float32)
    for face, emotion in enumerate(emotions):
        if emotion is not None:
            probabilities[face] = 0.05
            probabilities[face, EMOTIONS.index(emotion)] = 0.7
    return JoinedFrame(frame=frame, probabilities=probabilities, labels=list(EMOTIONS),
                       timed_out=None in emotions, released_time=T0 + 0.05)


def pixels_near(image: np.ndarray, color: tuple[int, int, int], tolerance: int = 30) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - np.array(color)) <= tolerance, axis=2)


def test_annotator_draws_on_copy():
    frame = read_only_frame((300, 150, 100, 100), rejected=[((50, 50, 30, 30), "too_small")])
    original = frame.pixels.copy()

    annotated = Annotator().draw(joined_with(frame, "happy"))

    assert np.array_equal(frame.pixels, original)
    assert annotated.shape == (360, 640, 3)
    assert annotated.dtype == np.uint8
    happy = pixels_near(annotated, EMOTION_COLORS["happy"])
    assert happy[150:251, 298:303].sum() >= 50, "the box's left edge is not drawn in the emotion's colour"
    assert happy[:150, 290:420].sum() > 100, "no label tag above the box"
    # The bar chart sits right of the box; its panel darkens the gray background.
    assert annotated[160:200, 420:500].mean() < 80
    gray = pixels_near(annotated, (150, 150, 150), tolerance=20)
    assert gray[45:85, 45:85].sum() > 10, "the rejected face is not drawn"


def test_annotator_unclassified_face_white():
    frame = read_only_frame((300, 150, 100, 100))

    annotated = Annotator().draw(joined_with(frame, None))

    assert pixels_near(annotated, (255, 255, 255))[150:251, 298:303].sum() >= 50


@pytest.mark.parametrize("height", [360, 720, 1080])
def test_annotator_label_scales_with_height(height):
    scale = height / 360
    box = (int(300 * scale), int(150 * scale), int(100 * scale), int(100 * scale))
    frame = read_only_frame(box, size=(height * 16 // 9, height))

    annotated = Annotator().draw(joined_with(frame, "sad"))

    # The label tag is a filled band in the emotion's colour right above the box, 17 px high at 360p.
    column = pixels_near(annotated, EMOTION_COLORS["sad"])[: box[1], box[0] + 1]
    tag_height = int(column.sum())
    assert 14 * scale <= tag_height <= 19 * scale, f"label tag {tag_height} px high at {height}p"


def test_annotator_gray_16_bit_pixels():
    pixels = np.full((120, 160), 30000, dtype=np.uint16)
    frame = detected(0, FACE_A, pixels=pixels)

    annotated = Annotator().draw(joined_with(frame, "angry"))

    assert annotated.shape == (120, 160, 3)
    assert annotated.dtype == np.uint8


# Recorder


def test_recorder_frame_count_and_size(tmp_path):
    path = tmp_path / "out.mp4"
    with Recorder(path) as recorder:
        for index in range(12):
            recorder.write("cam", np.full((120, 160, 3), index * 20, dtype=np.uint8), 10.0)

    assert video_properties(path) == (12, 160, 120, 10.0)
    if shutil.which("ffprobe"):
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                "stream=codec_name,nb_read_frames", "-of", "json", str(path)],
                               capture_output=True, text=True, timeout=60, check=True)
        stream = json.loads(probe.stdout)["streams"][0]
        assert stream == {"codec_name": "mpeg4", "nb_read_frames": "12"}


def test_recorder_valid_after_exception(tmp_path):
    path = tmp_path / "interrupted.mp4"
    with pytest.raises(RuntimeError, match="stopped mid-way"):
        with Recorder(path) as recorder:
            for index in range(20):
                if index == 7:
                    raise RuntimeError("stopped mid-way")
                recorder.write("cam", np.full((120, 160, 3), 100, dtype=np.uint8), 10.0)

    assert video_properties(path)[:3] == (7, 160, 120)


def test_recorder_sources_and_sizes(tmp_path):
    with Recorder(tmp_path / "out.mp4") as recorder:
        recorder.write("first", np.zeros((101, 151, 3), dtype=np.uint8), 10.0)
        recorder.write("second", np.zeros((120, 160, 3), dtype=np.uint8), None)
        recorder.write("second", np.zeros((60, 60, 3), dtype=np.uint8), None)

    # FFmpeg's MPEG-4 encoder needs even sides, so the odd last row and column are cut off.
    assert video_properties(tmp_path / "out.mp4") == (1, 150, 100, 10.0)
    assert video_properties(tmp_path / "out.second.mp4") == (2, 160, 120, 25.0)


def test_recorder_source_placeholder(tmp_path):
    recorder = Recorder(tmp_path / "{source}.mp4")

    assert recorder.path_for("door") == tmp_path / "door.mp4"


def test_recorder_missing_folder(tmp_path):
    recorder = Recorder(tmp_path / "missing" / "out.mp4")

    with pytest.raises(RecorderError, match="does not exist"):
        recorder.write("cam", np.zeros((120, 160, 3), dtype=np.uint8), 10.0)


# Events


def test_events_fields_and_types(tmp_path):
    path = tmp_path / "events.jsonl"
    frame = detected(4, FACE_A, FACE_B, capture_time=T0)
    joined = joined_with(frame, "happy", None)

    with EventWriter(path) as events:
        lines_written = events.write(joined)
        events.write(joined_with(detected(5), ))

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines_written == 2
    assert len(lines) == 2
    first, second = lines
    assert set(first) == {"source", "frame_index", "capture_time", "box", "emotion", "probabilities", "latency_ms",
                          "status"}
    assert first["status"] == "classified"
    assert first["source"] == "cam"
    assert first["frame_index"] == 4
    assert isinstance(first["capture_time"], float) and first["capture_time"] == T0
    assert first["box"] == list(FACE_A)
    assert first["emotion"] == "happy"
    assert set(first["probabilities"]) == set(EMOTIONS)
    assert all(isinstance(value, float) for value in first["probabilities"].values())
    assert math.isclose(first["probabilities"]["happy"], 0.7, abs_tol=1e-6)
    assert math.isclose(first["latency_ms"], 50.0, abs_tol=0.01)
    assert second["box"] == list(FACE_B)
    assert second["emotion"] is None
    assert second["probabilities"] is None
    assert second["status"] == "classification_timeout"


def test_events_rejected_faces_written(tmp_path):
    path = tmp_path / "events.jsonl"
    frame = dataclasses.replace(
        detected(7, FACE_A, capture_time=T0),
        rejected_boxes=boxes_of(FACE_B), rejected_reasons=["too_small"],
    )

    with EventWriter(path) as events:
        lines_written = events.write(joined_with(frame, "sad"))

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines_written == 2
    assert [line["status"] for line in lines] == ["classified", "too_small"]
    assert lines[1]["box"] == list(FACE_B)
    assert lines[1]["emotion"] is None
    assert lines[1]["probabilities"] is None


def test_events_flushed_before_close(tmp_path, wait_until):
    path = tmp_path / "events.jsonl"
    events = EventWriter(path, flush_interval_s=0.2)

    def flushed_text() -> str:
        events.flush_if_due()
        return path.read_text()

    try:
        events.write(joined_with(detected(0, FACE_A), "sad"))
        assert wait_until(flushed_text, timeout_s=5)
        visible = path.read_text()
    finally:
        events.close()

    assert json.loads(visible)["emotion"] == "sad"


# Display


def test_display_without_display_rejected(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)

    with pytest.raises(DisplayError, match="neither DISPLAY nor WAYLAND_DISPLAY is set"):
        Display().open()


# The sink stage over ZeroMQ


def test_sink_stage_joins_and_finishes(tmp_path, zmq_context, ipc_endpoint):
    endpoint = ipc_endpoint("results")
    stage = SinkStage(endpoint, record=tmp_path / "out.mp4", events=tmp_path / "events.jsonl",
                      classification_timeout_s=0.3, expected_sources=["stage-cam"], context=zmq_context)
    stage.setup()
    finished = False
    try:
        with Sender(endpoint, bind=False, hwm=100, stage="test", context=zmq_context) as sender:
            # Frame 1 has no faces, frame 3 never gets its classifications, and the
            # classifications of the other frames arrive late, one even before its frame.
            sender.send(classified(0, (FACE_A, "happy"), source="stage-cam"))
            for index in range(6):
                boxes = () if index == 1 else (FACE_A,)
                sender.send(detected(index, *boxes, source="stage-cam", capture_time=time.time()))
            for index in (5, 4, 2):
                sender.send(classified(index, (FACE_A, "sad"), source="stage-cam"))
            sender.send(EndOfStream(source_id="stage-cam", frame_index=6, capture_time=time.time(), timestamps={},
                                    reason="end_of_file"))

            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not finished:
                finished = not stage.step(0.05)
    finally:
        stage.close()

    assert finished
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [event["frame_index"] for event in events] == [0, 2, 3, 4, 5]
    assert [event["emotion"] for event in events] == ["happy", "sad", None, "sad", "sad"]
    assert video_properties(tmp_path / "out.mp4")[:3] == (6, 160, 120)
    assert metric("emotion_frames_total", stage="sink", source="stage-cam") == 6
    assert metric("emotion_frames_dropped_total", stage="sink", source="stage-cam",
                  reason="classification_timeout") == 1
    assert metric("emotion_end_to_end_latency_seconds_count", source="stage-cam") == 6


def test_sink_stage_idle_finish(tmp_path, zmq_context, ipc_endpoint):
    # A restarted sink whose sources ended before it started never gets their ends of stream.
    endpoint = ipc_endpoint("results")
    stage = SinkStage(endpoint, events=tmp_path / "events.jsonl", classification_timeout_s=0.3,
                      finish_when_idle_s=0.5, context=zmq_context)
    waiting = SinkStage(ipc_endpoint("results-waiting"), classification_timeout_s=0.3, context=zmq_context)
    stage.setup()
    waiting.setup()
    finished_after_s = None
    try:
        with Sender(endpoint, bind=False, hwm=100, stage="test", context=zmq_context) as sender:
            sender.send(detected(7, FACE_A, source="late-cam", capture_time=time.time()))
            started = time.monotonic()
            while time.monotonic() - started < 10 and finished_after_s is None:
                if not stage.step(0.05):
                    finished_after_s = time.monotonic() - started
            waiting_steps = [waiting.step(0.05) for _ in range(10)]
    finally:
        stage.close()
        waiting.close()

    assert finished_after_s is not None and finished_after_s >= 0.5
    assert all(waiting_steps), "a sink without finish_when_idle_s finished without an end of stream"
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(event["frame_index"], event["status"]) for event in events] == [(7, "classification_timeout")]


# The sink process


def start_sink(tmp_path: Path, endpoint: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "common.cli", "sink", "--input", endpoint, "--record", str(tmp_path / "out.mp4"),
         "--events", str(tmp_path / "events.jsonl"), "--metrics-port", "0", "--ready-file",
         str(tmp_path / "sink.ready"), *args],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def send_faces(sender: Sender, count: int, source: str) -> None:
    for index in range(count):
        assert sender.send(detected(index, FACE_A, source=source, capture_time=time.time()), timeout_ms=5000)
        assert sender.send(classified(index, (FACE_A, "happy"), source=source), timeout_ms=5000)


def event_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def stop_process(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.kill()
    return process.communicate(timeout=10)[1]


def test_sink_process_end_of_stream_exits(tmp_path, zmq_context, ipc_endpoint, wait_until):
    endpoint = ipc_endpoint("results")
    process = start_sink(tmp_path, endpoint, "--sources", "proc-cam")
    # The sender stays open until the sink exits: closing it with linger 0 would discard queued messages.
    try:
        with Sender(endpoint, bind=False, hwm=100, stage="test", context=zmq_context) as sender:
            assert wait_until(lambda: read_ready_file(tmp_path / "sink.ready") is not None
                              or process.poll() is not None, timeout_s=30)
            send_faces(sender, 9, "proc-cam")
            sender.send(EndOfStream(source_id="proc-cam", frame_index=9, capture_time=time.time(), timestamps={},
                                    reason="end_of_file"))
            process.wait(timeout=30)
    finally:
        stderr = stop_process(process)

    assert process.returncode == 0, stderr
    assert video_properties(tmp_path / "out.mp4")[:3] == (9, 160, 120)
    assert event_lines(tmp_path / "events.jsonl") == 9


def test_sink_process_interrupt_keeps_files_valid(tmp_path, zmq_context, ipc_endpoint, wait_until):
    endpoint = ipc_endpoint("results")
    process = start_sink(tmp_path, endpoint)
    try:
        with Sender(endpoint, bind=False, hwm=100, stage="test", context=zmq_context) as sender:
            assert wait_until(lambda: read_ready_file(tmp_path / "sink.ready") is not None
                              or process.poll() is not None, timeout_s=30)
            send_faces(sender, 8, "ctrl-c-cam")
            # Events are flushed every second, so their lines show when all frames were written.
            assert wait_until(lambda: event_lines(tmp_path / "events.jsonl") == 8, timeout_s=20)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    finally:
        stderr = stop_process(process)

    assert process.returncode == 0, stderr
    assert "received SIGINT" in stderr
    assert video_properties(tmp_path / "out.mp4")[:3] == (8, 160, 120)
