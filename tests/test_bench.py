"""`emotion-pipeline bench`: the quick suite end to end, and the timing and report helpers it relies on.

The quick runs start the real command in a subprocess. The pipeline parts
build their clips with ffmpeg from the phone clip beside the checkout and run
the real multi-process pipeline, so they skip where either is missing.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.bench_cli import import_suite, parse_parts, parse_workers

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHONE_CLIP = SHARED / "media" / "street_phone_596x336.mp4"
QUICK_CLIP_FRAMES = 50
BENCH_TIMEOUT_S = 300

# The suite is imported the way the command imports it, from the checkout's benchmarks folder.
suite = import_suite()
from benchmarks.pipeline import PipelineRunError, read_frame_timings, summarize_timings  # noqa: E402
from benchmarks.report import markdown_table  # noqa: E402

needs_clip = pytest.mark.skipif(not PHONE_CLIP.is_file(), reason=f"phone clip not found at {PHONE_CLIP}")
needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="ffmpeg not found on PATH; the pipeline parts build their clips with it",
)


def run_bench(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    report_path = tmp_path / "bench.json"
    command = [sys.executable, "-m", "common.cli", "bench", "--quick", "--json", str(report_path),
               "--cache-dir", str(tmp_path / "cache"), *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(report_path.read_text())


def write_events(path: Path, events: list[dict]) -> None:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))


def test_quick_classify_reports_every_method(tmp_path):
    result, report = run_bench(tmp_path, "--only", "classify")

    machine = report["machine"]
    assert machine["cores"] >= 1
    assert machine["cpu"]
    for key in ("python", "tensorflow", "litert"):
        assert machine[key], f"machine.{key} should name the installed version"

    rows = report["classify"]["rows"]
    methods = {(row["backend"], row["method"], row["batch_size"]) for row in rows}
    expected = {("keras", "predict", 1), ("keras", "compiled", 1)}
    expected |= {(backend, "classifier", size) for backend in ("keras", "litert") for size in (1, 8, 32, 128)}
    expected |= {("litert", "views", 32)}
    assert methods == expected
    for row in rows:
        assert row["faces_per_s"] > 0, row
        assert row["latency_ms"] > 0, row
    assert report["classify"]["best"]["speedup_vs_predict"] > 1, "batching should beat model.predict per face"
    assert "| litert batch 32 |" in result.stdout
    assert "| litert batch 32, views: original, each also mirrored |" in result.stdout
    assert sorted(row["views_per_face"] for row in rows if row["method"] == "views") == [2, 4]
    assert "pipeline" not in report


@needs_clip
def test_quick_detect_times_every_detector(tmp_path):
    from detector.detectors import DETECTOR_NAMES

    _, report = run_bench(tmp_path, "--only", "detect")

    timings = report["detect"]["detectors"]
    assert set(timings) == set(DETECTOR_NAMES)
    for name, sizes in timings.items():
        assert set(sizes) == {"640x360", "1280x720", "1920x1080"}, name
        for size, timing in sizes.items():
            assert timing["median_ms"] > 0, (name, size)


@pytest.mark.slow
@needs_clip
@needs_ffmpeg
def test_quick_pipeline_records_every_frame(tmp_path):
    result, report = run_bench(tmp_path, "--only", "pipeline,live", "--workers", "1")

    pipeline = report["pipeline"]
    assert pipeline["clip_frames"] == QUICK_CLIP_FRAMES
    assert pipeline["every_frame_recorded"] is True
    assert set(pipeline["loops"]) >= {"pipeline_1w", "single_process"}
    for name, loop in pipeline["loops"].items():
        assert loop["frames_recorded"] == QUICK_CLIP_FRAMES, name
        assert loop["fps"] > 0, name
    assert pipeline["pipeline_vs_single_process"] > 0
    assert pipeline["fer_skipped"] == "no --fer-python given"
    assert "fer loop skipped" in result.stdout

    live = report["live"]
    latency = live["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert 0.0 <= live["drop_rate"] <= 1.0
    # Paced at 25 fps, the run cannot go faster than the clip's frame rate by more than rounding.
    assert live["fps"] <= 26
    assert {check["figure"] for check in report["target_checks"]} >= {"live p99 latency at 25 fps (ms)"}


def test_fer_loop_skipped_without_fer(tmp_path):
    # This interpreter has no fer package, so the suite must skip the peer loop instead of failing.
    reason = suite.check_fer_python(Path(sys.executable))

    assert reason is not None
    assert "cannot import fer" in reason


def test_timings_one_per_frame(tmp_path):
    events = tmp_path / "events.jsonl"
    write_events(events, [
        {"frame_index": 0, "capture_time": 100.0, "latency_ms": 50.0, "status": "classified"},
        {"frame_index": 0, "capture_time": 100.0, "latency_ms": 50.0, "status": "classified"},
        {"frame_index": 2, "capture_time": 100.2, "latency_ms": 80.0, "status": "too_small"},
        {"frame_index": 1, "capture_time": 100.1, "latency_ms": 60.0, "status": "classified"},
    ])

    timings = read_frame_timings(events)

    assert [timing.frame_index for timing in timings] == [0, 1, 2]
    assert timings[2].released_time == pytest.approx(100.28)


def test_fps_spans_first_capture_to_last_release(tmp_path):
    events = tmp_path / "events.jsonl"
    # Frame 1 has no face and so no event; it still counts, because the frames around it were processed.
    write_events(events, [
        {"frame_index": 0, "capture_time": 10.0, "latency_ms": 100.0},
        {"frame_index": 2, "capture_time": 10.4, "latency_ms": 50.0},
        {"frame_index": 3, "capture_time": 10.5, "latency_ms": 500.0},
    ])

    summary = summarize_timings(read_frame_timings(events))

    assert summary["frames_timed"] == 4
    assert summary["seconds"] == pytest.approx(1.0)
    assert summary["fps"] == pytest.approx(4.0)
    assert summary["frames_with_events"] == 3
    assert summary["latency_ms"]["max"] == 500.0


def test_fps_needs_two_frames(tmp_path):
    events = tmp_path / "events.jsonl"
    write_events(events, [{"frame_index": 0, "capture_time": 10.0, "latency_ms": 100.0}])

    with pytest.raises(PipelineRunError, match="at least 2 frames"):
        summarize_timings(read_frame_timings(events))


def test_targets_checked_in_both_directions():
    report = {
        "live": {"latency_ms": {"p99": 120.0}},
        "classify": {"best": {"faces_per_s": 12_000.0}},
    }

    checks = {check["figure"]: check for check in suite.check_targets(report)}

    assert checks["batched classification (faces/s)"]["met"] is True
    assert checks["live p99 latency at 25 fps (ms)"]["met"] is False
    assert checks["live p99 latency at 25 fps (ms)"]["direction"] == "at most"
    assert len(checks) == 2, "parts that did not run should have no target check"


def test_markdown_table_aligns_numbers_right():
    table = markdown_table(("loop", "fps"), [("pipeline", "51.0"), ("fer", "3.1")])

    assert table.splitlines() == ["| loop | fps |", "|---|---:|", "| pipeline | 51.0 |", "| fer | 3.1 |"]


def test_unknown_part_rejected():
    result = subprocess.run([sys.executable, "-m", "common.cli", "bench", "--only", "classify,train"],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "expected parts from classify, detect, pipeline, live, got 'classify,train'" in result.stderr


def test_parts_and_workers_parsed():
    assert parse_parts("pipeline, live") == ("pipeline", "live")
    assert parse_workers("1,2,4") == (1, 2, 4)
    with pytest.raises(argparse.ArgumentTypeError, match="from 1 to 16"):
        parse_workers("0,2")
