"""The benchmark suite behind `emotion-pipeline bench`: run the parts, print markdown tables, write JSON.

Parts:
- classify: faces/s and latency per face of each inference backend.
- detect: time per frame of each face detector at three frame sizes.
- pipeline: frames/s of the pipeline on a 1280x720 clip with four faces per
  frame and every frame recorded, with 1, 2 and 4 classifier workers, against
  the single-process loop and, with --fer-python, the `fer` package's loop.
- live: capture-to-sink latency and drop rate of a one-face clip paced at 25 fps.

Every figure is the median over the repeats, and each part measures its
baselines in the same run as the figures they are compared with.
"""

import json
import logging
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.clips import PHONE_CLIP, build_four_face_clip, build_one_face_clip
from benchmarks.pipeline import PipelineRunError, run_pipeline
from benchmarks.report import describe_machine, format_number, machine_line, markdown_table, ratio

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
FER_LOOP = Path(__file__).resolve().parent / "fer_loop.py"
# The full clips loop the 115-frame phone clip three times. The quick ones are 2 s long.
FULL_CLIP_FRAMES = 345
QUICK_CLIP_FRAMES = 50
FULL_WORKERS = (1, 2, 4)
QUICK_WORKERS = (1,)
# A loop process gets this long per frame on top of its start-up. The fer loop ran at 2 to 3 frames/s
# on the four-face 720p clip on a 2-core machine.
LOOP_SECONDS_PER_FRAME = 2.0
LOOP_START_UP_S = 120
FER_IMPORT_TIMEOUT_S = 120
# Figures that differ between runs of the same loop, kept per run in the report.
PER_RUN_FIELDS = ("fps", "seconds", "wall_seconds", "frames_timed", "frames_with_events", "frames_recorded",
                  "latency_ms", "slowest_frames", "cores_used", "machine_idle_share", "faces")

TARGETS = {
    "classify_faces_per_s": 10_000,
    "pipeline_fps": 50,
    "pipeline_vs_fer": 5.0,
    "pipeline_vs_single_process": 1.5,
    "live_p99_ms": 100,
}


@dataclass
class SuiteOptions:
    parts: tuple[str, ...]
    repeats: int
    quick: bool
    cache_dir: Path
    output_dir: Path
    fer_python: Path | None = None
    workers: tuple[int, ...] = field(default=FULL_WORKERS)
    source_clip: Path = PHONE_CLIP


def run_suite(options: SuiteOptions) -> dict:
    """Run the chosen parts and return the report: the machine, the options and one entry per part."""
    report = {
        "machine": describe_machine(),
        "command": " ".join(["emotion-pipeline", *sys.argv[1:]]) if sys.argv else "",
        "quick": options.quick,
        "repeats": options.repeats,
        "targets": TARGETS,
    }
    for index, part in enumerate(options.parts, start=1):
        logger.info("Benchmark part %d of %d: %s", index, len(options.parts), part)
        started = time.monotonic()
        report[part] = PART_RUNNERS[part](options)
        logger.info("Finished part %s in %.0f s", part, time.monotonic() - started)
    report["target_checks"] = check_targets(report)
    return report


def run_classify_part(options: SuiteOptions) -> dict:
    from benchmarks.classify import run_classify

    return run_classify(options.repeats, options.quick)


def run_detect_part(options: SuiteOptions) -> dict:
    from benchmarks.detect import run_detect

    return run_detect(options.repeats, options.quick)


def clip_frames(options: SuiteOptions) -> int:
    return QUICK_CLIP_FRAMES if options.quick else FULL_CLIP_FRAMES


def run_pipeline_part(options: SuiteOptions) -> dict:
    """Time the pipeline per worker count, the single-process loop and the fer loop, interleaved per repeat."""
    frames = clip_frames(options)
    clip = build_four_face_clip(options.cache_dir, frames, options.source_clip)
    fer_skip_reason = check_fer_python(options.fer_python)
    runs: dict[str, list[dict]] = {f"pipeline_{workers}w": [] for workers in options.workers}
    runs["single_process"] = []
    if fer_skip_reason is None:
        runs["fer"] = []

    total = options.repeats * len(runs)
    done = 0
    for repeat in range(options.repeats):
        for workers in options.workers:
            done += 1
            logger.info("Run %d of %d: pipeline with %d workers on %s", done, total, workers, clip.name)
            runs[f"pipeline_{workers}w"].append(run_pipeline(clip, frames, options.output_dir, workers))
        done += 1
        logger.info("Run %d of %d: single-process loop on %s", done, total, clip.name)
        runs["single_process"].append(run_loop_script(
            [sys.executable, "-m", "benchmarks.single_process"], clip, frames, options.output_dir, "single_process"))
        if "fer" in runs:
            done += 1
            logger.info("Run %d of %d: fer loop on %s", done, total, clip.name)
            runs["fer"].append(run_loop_script(
                [str(options.fer_python), str(FER_LOOP)], clip, frames, options.output_dir, "fer"))

    result = {"clip": str(clip), "clip_frames": frames, "fer_skipped": fer_skip_reason,
              "loops": {name: summarize_runs(name_runs) for name, name_runs in runs.items()}}
    result["every_frame_recorded"] = all(
        run["frames_recorded"] == frames for name_runs in runs.values() for run in name_runs
    )
    best = max((result["loops"][f"pipeline_{workers}w"] for workers in options.workers), key=lambda loop: loop["fps"])
    result["best_pipeline"] = best
    result["pipeline_vs_single_process"] = ratio(best["fps"], result["loops"]["single_process"]["fps"])
    result["pipeline_vs_fer"] = ratio(best["fps"], result["loops"].get("fer", {}).get("fps"))
    return result


def summarize_runs(runs: list[dict]) -> dict:
    """Summarize the runs of one loop: medians, the smallest recorded frame count and each run's own figures.

    Fields that are the same in every run (workers, frames read, detector) are
    taken from the first run.
    """
    summary = {key: value for key, value in runs[0].items() if key not in PER_RUN_FIELDS}
    summary["runs"] = [{key: run[key] for key in PER_RUN_FIELDS if key in run} for run in runs]
    summary["fps"] = statistics.median(run["fps"] for run in runs)
    summary["frames_recorded"] = min(run["frames_recorded"] for run in runs)
    if runs[0].get("cpu_ms_per_frame"):
        summary["cpu_ms_per_frame"] = median_cpu(runs)
    if runs[0].get("cores_used") is not None:
        summary["cores_used"] = statistics.median(run["cores_used"] for run in runs)
    if runs[0].get("machine_idle_share") is not None:
        summary["machine_idle_share"] = statistics.median(run["machine_idle_share"] for run in runs)
    if "warnings" in runs[0]:
        summary["warnings"] = [line for run in runs for line in run["warnings"]]
    if "step_seconds" in runs[0]:
        frames = sum(run["frames"] for run in runs)
        summary["step_ms_per_frame"] = {
            step: 1000 * sum(run["step_seconds"][step] for run in runs) / frames for step in runs[0]["step_seconds"]
        }
        summary.pop("step_seconds")
    return summary


def median_cpu(runs: list[dict]) -> dict[str, float]:
    """Return the median over runs of each stage's CPU ms per frame."""
    return {
        stage: statistics.median(run["cpu_ms_per_frame"].get(stage, 0.0) for run in runs)
        for stage in runs[0]["cpu_ms_per_frame"]
    }


def check_fer_python(fer_python: Path | None) -> str | None:
    """Return why the fer loop is skipped, or None when `fer_python` can import fer."""
    if fer_python is None:
        return "no --fer-python given"
    try:
        result = subprocess.run([str(fer_python), "-c", "import fer.fer"], capture_output=True, text=True,
                                timeout=FER_IMPORT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        reason = f"{fer_python} could not run: {error}"
    else:
        if result.returncode == 0:
            return None
        last_line = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        reason = f"{fer_python} cannot import fer: {last_line}"
    logger.warning("Skipping the fer loop: %s", reason)
    return reason


def run_loop_script(command: list[str], clip: Path, frames: int, output_dir: Path, name: str) -> dict:
    """Run a loop script that prints one JSON object, and check that it recorded every frame."""
    from benchmarks.clips import count_frames

    record = output_dir / f"{name}.mp4"
    timeout_s = LOOP_START_UP_S + LOOP_SECONDS_PER_FRAME * frames
    try:
        result = subprocess.run([*command, "--clip", str(clip), "--record", str(record)], capture_output=True,
                                text=True, timeout=timeout_s, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as error:
        raise PipelineRunError(f"the {name} loop did not finish {clip} within {timeout_s:.0f} s") from error
    if result.returncode != 0:
        raise PipelineRunError(f"the {name} loop failed on {clip} with exit status {result.returncode}: "
                               f"{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["frames_recorded"] = count_frames(record)
    logger.info("%s loop: %.1f fps, %d of %d frames recorded", name, measured["fps"], measured["frames_recorded"],
                frames)
    return measured


def run_live_part(options: SuiteOptions) -> dict:
    """Run the one-face clip paced at 25 fps with one worker; pool the frame latencies of every repeat."""
    frames = clip_frames(options)
    clip = build_one_face_clip(options.cache_dir, frames, options.source_clip)
    runs = []
    for repeat in range(options.repeats):
        logger.info("Live run %d of %d: %s paced at its frame rate", repeat + 1, options.repeats, clip.name)
        runs.append(run_pipeline(clip, frames, options.output_dir, workers=1, realtime=True, keep_latencies=True))
    latencies = np.concatenate([run.pop("frame_latencies_ms") for run in runs])
    drop_rates = [1 - run["frames_recorded"] / frames for run in runs]
    return {
        "clip": str(clip), "clip_frames": frames, "workers": 1,
        "latency_ms": {f"p{point}": float(np.percentile(latencies, point)) for point in (50, 95, 99)}
        | {"max": float(latencies.max()), "frames": int(len(latencies))},
        "drop_rate": statistics.median(drop_rates),
        "frames_recorded": [run["frames_recorded"] for run in runs],
        "fps": statistics.median(run["fps"] for run in runs),
        "cpu_ms_per_frame": median_cpu(runs) if runs[0]["cpu_ms_per_frame"] else {},
        "cores_used": statistics.median(run["cores_used"] for run in runs) if runs[0]["cores_used"] else None,
        "runs": [
            {key: run[key] for key in ("fps", "latency_ms", "slowest_frames", "cores_used", "machine_idle_share",
                                       "warnings")}
            for run in runs
        ],
    }


PART_RUNNERS = {
    "classify": run_classify_part, "detect": run_detect_part, "pipeline": run_pipeline_part, "live": run_live_part,
}


def check_targets(report: dict) -> list[dict]:
    """Compare each measured figure with its target; figures of parts not run are left out."""
    checks = []

    def add(name: str, value: float | None, target: float, higher_is_better: bool = True) -> None:
        if value is None:
            return
        met = value >= target if higher_is_better else value <= target
        checks.append({"figure": name, "value": value, "target": target, "met": met,
                       "direction": "at least" if higher_is_better else "at most"})

    if "classify" in report:
        add("batched classification (faces/s)", report["classify"]["best"]["faces_per_s"],
            TARGETS["classify_faces_per_s"])
    if "pipeline" in report:
        pipeline = report["pipeline"]
        add("4-face 720p pipeline (fps)", pipeline["best_pipeline"]["fps"], TARGETS["pipeline_fps"])
        add("pipeline / fer loop", pipeline["pipeline_vs_fer"], TARGETS["pipeline_vs_fer"])
        add("pipeline / single-process loop", pipeline["pipeline_vs_single_process"],
            TARGETS["pipeline_vs_single_process"])
    if "live" in report:
        add("live p99 latency at 25 fps (ms)", report["live"]["latency_ms"]["p99"], TARGETS["live_p99_ms"],
            higher_is_better=False)
    return checks


LOOP_NAMES = {"single_process": "single-process loop (LiteRT)", "fer": "fer package loop"}


def loop_label(name: str) -> str:
    if name.startswith("pipeline_"):
        workers = int(name.removeprefix("pipeline_").removesuffix("w"))
        return f"pipeline, {workers} worker{'s' if workers > 1 else ''}"
    return LOOP_NAMES[name]


def format_pipeline(result: dict) -> str:
    best_fps = result["best_pipeline"]["fps"]
    rows = [
        (loop_label(name), format_number(loop["fps"]), f"{loop['frames_recorded']}/{result['clip_frames']}",
         f"{best_fps / loop['fps']:.2f}x")
        for name, loop in result["loops"].items()
    ]
    table = markdown_table(("loop", "fps (median)", "frames recorded", "best pipeline vs this"), rows)
    lines = [f"Clip: {result['clip_frames']} frames of 1280x720 with four faces each, every frame recorded.", "",
             table]
    if result["fer_skipped"]:
        lines += ["", f"fer loop skipped: {result['fer_skipped']}."]
    steps = [(loop_label(name), loop["step_ms_per_frame"]) for name, loop in result["loops"].items()
             if "step_ms_per_frame" in loop]
    for label, step_ms in steps:
        cells = ", ".join(f"{step} {value:.1f}" for step, value in step_ms.items())
        lines += ["", f"{label}, ms per frame by step: {cells}."]
    for name, loop in result["loops"].items():
        if loop.get("cpu_ms_per_frame"):
            lines += ["", f"{loop_label(name)}, {format_cpu(loop['cpu_ms_per_frame'])}{format_share(loop)}."]
    return "\n".join(lines)


def format_share(loop: dict) -> str:
    """Describe the cores the stages used and the machine's idle share, where they were measured."""
    text = ""
    if loop.get("cores_used") is not None:
        text += f"; the stages used {loop['cores_used']:.2f} cores"
    if loop.get("machine_idle_share") is not None:
        text += f" and the machine was idle {loop['machine_idle_share']:.0%} of the time"
    return text


def format_cpu(cpu_ms_per_frame: dict[str, float]) -> str:
    cells = ", ".join(f"{stage} {value:.1f}" for stage, value in cpu_ms_per_frame.items())
    return f"CPU ms per frame by stage process: {cells}, total {sum(cpu_ms_per_frame.values()):.1f}"


def format_live(result: dict) -> str:
    latency = result["latency_ms"]
    rows = [(
        f"{result['clip_frames']} frames at 25 fps, 1 worker", format_number(latency["p50"]),
        format_number(latency["p95"]), format_number(latency["p99"]), format_number(latency["max"]),
        f"{result['drop_rate']:.1%}",
    )]
    table = markdown_table(("clip", "p50 ms", "p95 ms", "p99 ms", "max ms", "frames dropped"), rows)
    per_run = ", ".join(
        f"p99 {format_number(run['latency_ms']['p99'])} and max {format_number(run['latency_ms']['max'])}"
        for run in result["runs"]
    )
    run_count = len(result["runs"])
    lines = [table, "", f"Latency pooled over {run_count} run{'s' if run_count > 1 else ''}. Per run: {per_run} ms."]
    if result["cpu_ms_per_frame"]:
        lines += ["", f"{format_cpu(result['cpu_ms_per_frame'])}{format_share(result)}."]
    return "\n".join(lines)


def format_targets(checks: list[dict]) -> str:
    rows = [
        (check["figure"], format_number(check["value"]), f"{check['direction']} {check['target']:,}",
         "met" if check["met"] else "missed")
        for check in checks
    ]
    return markdown_table(("figure", "measured", "target", "result"), rows)


def format_report(report: dict) -> str:
    """Return the report as markdown: the machine, then one section per part that ran, then the targets."""
    from benchmarks.classify import format_classify
    from benchmarks.detect import format_detect

    sections = [f"Machine: {machine_line(report['machine'])}.", f"Command: `{report['command']}`."]
    if report["quick"]:
        sections.append("Quick run: the figures are smoke-test sizes, not benchmark results.")
    titles = {
        "classify": ("Classification", format_classify), "detect": ("Face detection", format_detect),
        "pipeline": ("Pipeline, 4 faces at 1280x720", format_pipeline), "live": ("Live, 25 fps", format_live),
    }
    for part, (title, formatter) in titles.items():
        if part in report:
            sections.append(f"### {title}\n\n{formatter(report[part])}")
    # A quick run's figures mean nothing, so it is not compared with the targets.
    if report["target_checks"] and not report["quick"]:
        sections.append(f"### Targets\n\n{format_targets(report['target_checks'])}")
    return "\n\n".join(sections)
