"""The whole pipeline as real processes: supervisor, capture, detector, classifier workers and sink.

These tests run `emotion-pipeline run` on the real clip beside the checkout,
over ipc endpoints in a temporary folder, and check the recording, the events
and the metrics that the processes export while they run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from common.metrics import scrape_metrics
from common.stage import read_ready_file
from common.transport import free_tcp_ports

CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "street_phone_596x336.mp4"
CLIP_FRAMES = 115
RUN_TIMEOUT_S = 240

needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"sample clip not found at {CLIP}")
pytestmark = [pytest.mark.slow, needs_clip]


def pipeline_command(run_dir: Path, ipc_dir: Path, *options: str, metrics: bool = False) -> list[str]:
    """Build an `emotion-pipeline run` command line whose sockets live in `ipc_dir`."""
    overrides = [
        f"endpoints.frames='ipc://{ipc_dir}/frames.ipc'",
        f"endpoints.crops='ipc://{ipc_dir}/crops.ipc'",
        f"endpoints.results='ipc://{ipc_dir}/results.ipc'",
    ]
    if metrics:
        capture, detector, sink, classifier = free_tcp_ports(4)
        overrides += [f"metrics.capture={capture}", f"metrics.detector={detector}",
                      f"metrics.sink={sink}", f"metrics.classifier={classifier}"]
    else:
        overrides += ["metrics.capture=0", "metrics.detector=0", "metrics.sink=0", "metrics.classifier=0"]

    command = [sys.executable, "-m", "common.cli", "run", "--run-dir", str(run_dir), *options]
    for override in overrides:
        command += ["--set", override]
    return command


def read_video(path: Path) -> tuple[int, tuple[int, int], float]:
    capture = cv2.VideoCapture(str(path))
    try:
        frames = 0
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        fps = capture.get(cv2.CAP_PROP_FPS)
        while capture.read()[0]:
            frames += 1
        return frames, size, fps
    finally:
        capture.release()


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_pipeline(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if result.returncode != 0:
        print(result.stderr[-5000:])
    return result


def check_outputs(record: Path, events_path: Path) -> list[dict]:
    frames, size, fps = read_video(record)
    assert frames == CLIP_FRAMES
    assert size == (596, 336)
    assert fps == pytest.approx(25, abs=0.5)

    events = read_events(events_path)
    for event in events:
        assert set(event) >= {"source", "frame_index", "capture_time", "box", "emotion", "probabilities",
                              "latency_ms", "status"}
    classified = [event for event in events if event["status"] == "classified"]
    for event in classified:
        assert event["emotion"] == max(event["probabilities"], key=event["probabilities"].get)

    # The face is visible in every frame; allow a few misses for the head turning down.
    labelled_frames = {event["frame_index"] for event in classified}
    assert len(labelled_frames) >= 0.8 * CLIP_FRAMES
    return events


def test_file_run_records_every_frame(tmp_path, ipc_dir):
    record, events = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    command = pipeline_command(tmp_path / "run", ipc_dir, "--source", str(CLIP),
                               "--record", str(record), "--events", str(events))

    result = run_pipeline(command)

    assert result.returncode == 0, result.stderr[-3000:]
    check_outputs(record, events)


def test_two_workers_share_frames(tmp_path, ipc_dir):
    record, events = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    command = pipeline_command(tmp_path / "run", ipc_dir, "--source", str(CLIP), "--workers", "2",
                               "--record", str(record), "--events", str(events))

    result = run_pipeline(command)

    assert result.returncode == 0, result.stderr[-3000:]
    check_outputs(record, events)
    assert result.stderr.count("joined with") == 2, "both classifier workers should have joined the detector"


def wait_for_ready(run_dir: Path, names: list[str], process: subprocess.Popen, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        ready = {name: read_ready_file(run_dir / f"{name}.ready") for name in names}
        if all(ready.values()):
            return ready
        time.sleep(0.05)
    raise AssertionError(f"stages {names} were not all ready within {timeout_s} s")


def test_metrics_scraped_while_running(tmp_path, ipc_dir):
    run_dir = tmp_path / "run"
    command = pipeline_command(run_dir, ipc_dir, "--source", str(CLIP), "--realtime",
                               "--record", str(tmp_path / "out.mp4"), metrics=True)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready = wait_for_ready(run_dir, ["sink", "classifier-0", "detector", "capture"], process)
        # Let frames flow for a second of the clip's real-time pace before scraping.
        deadline = time.monotonic() + 30
        sink_metrics = ""
        while time.monotonic() < deadline and "emotion_end_to_end_latency_seconds_count" not in sink_metrics:
            sink_metrics = scrape_metrics(ready["sink"]["metrics_port"])
            time.sleep(0.2)

        assert "emotion_end_to_end_latency_seconds_bucket" in sink_metrics
        assert "emotion_output_fps" in sink_metrics
        detector_metrics = scrape_metrics(ready["detector"]["metrics_port"])
        assert 'emotion_stage_latency_seconds_bucket{le="0.005",source="source0",stage="detector"}' in detector_metrics
        classifier_metrics = scrape_metrics(ready["classifier-0"]["metrics_port"])
        assert "emotion_batch_size_bucket" in classifier_metrics
        capture_metrics = scrape_metrics(ready["capture"]["metrics_port"])
        assert 'emotion_frames_total{source="source0",stage="capture"}' in capture_metrics
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()
    assert process.returncode == 0


def test_killed_worker_loses_no_frame(tmp_path, ipc_dir):
    run_dir = tmp_path / "run"
    record, events_path = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    command = pipeline_command(run_dir, ipc_dir, "--source", str(CLIP), "--workers", "2", "--realtime",
                               "--record", str(record), "--events", str(events_path))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready = wait_for_ready(run_dir, ["sink", "classifier-0", "classifier-1", "detector", "capture"], process)
        # Kill a worker once frames are flowing, about a second into the clip.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (events_path.exists() and events_path.read_text().count("\n") >= 5):
            time.sleep(0.05)
        os.kill(ready["classifier-0"]["pid"], signal.SIGKILL)
        stderr = process.communicate(timeout=RUN_TIMEOUT_S)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, stderr[-3000:]
    assert "Restarting stage classifier-0" in stderr
    events = check_outputs(record, events_path)
    unclassified = [event["frame_index"] for event in events if event["status"] == "classification_timeout"]
    assert unclassified == [], "frames of the killed worker should have been classified by the other one"
