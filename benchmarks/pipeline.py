"""End-to-end runs of `emotion-pipeline run` on a benchmark clip, timed from its events file.

Frames per second exclude process start-up and model loading: they count the
frames from the first to the last frame with an event, over the time from the
first one's capture to the last one's release at the sink. The sink writes an
event per face with `capture_time` and `latency_ms` (capture to release), so a
frame's release time is `capture_time + latency_ms / 1000`. Frames without a
face write no event.

On Linux each run also measures the CPU time of every stage process from the
moment it is ready (its model loaded) to its exit, from /proc. Per frame, that
shows which stage limits the run.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.clips import count_frames

logger = logging.getLogger(__name__)

# Start-up (model loading in every stage) takes about 10 s on a 2-core machine,
# and a loaded one can process as few as 10 frames per second.
RUN_TIMEOUT_BASE_S = 120
RUN_SECONDS_PER_FRAME = 0.2
STDERR_TAIL_CHARS = 3000
# Frames with the highest latency and stage warnings kept per run, to explain an outlier.
SLOWEST_FRAMES = 3
MAX_WARNINGS = 20
POLL_INTERVAL_S = 0.05
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class PipelineRunError(RuntimeError):
    """A pipeline run that failed, timed out or left too few events to time it."""


@dataclass(frozen=True)
class FrameTiming:
    frame_index: int
    capture_time: float
    released_time: float
    latency_ms: float


def read_frame_timings(events_path: Path) -> list[FrameTiming]:
    """Return one timing per frame with an event, in frame order, from a sink events file."""
    timings: dict[int, FrameTiming] = {}
    with open(events_path, encoding="utf-8") as events:
        for line in events:
            if not line.strip():
                continue
            event = json.loads(line)
            index = event["frame_index"]
            if index not in timings:
                released = event["capture_time"] + event["latency_ms"] / 1000
                timings[index] = FrameTiming(index, event["capture_time"], released, event["latency_ms"])
    return [timings[index] for index in sorted(timings)]


def summarize_timings(timings: list[FrameTiming]) -> dict:
    """Compute frames per second from the first frame's capture to the last frame's release, and latency percentiles."""
    if len(timings) < 2:
        raise PipelineRunError(f"expected events for at least 2 frames to time the run, got {len(timings)}")
    first = min(timings, key=lambda timing: timing.capture_time)
    last = max(timings, key=lambda timing: timing.released_time)
    frames = last.frame_index - first.frame_index + 1
    seconds = last.released_time - first.capture_time
    latencies = np.array([timing.latency_ms for timing in timings])
    return {
        "frames_timed": frames,
        "seconds": seconds,
        "fps": frames / seconds,
        "frames_with_events": len(timings),
        "latency_ms": {f"p{point}": float(np.percentile(latencies, point)) for point in (50, 95, 99)}
        | {"max": float(latencies.max())},
    }


class StageCpuSampler:
    """CPU seconds of each stage process of a supervisor, counted from the stage's ready file to its exit.

    A stage is named by its ready file (`capture`, `detector`, `sink`,
    `classifier-0` ...). Samples come from /proc every POLL_INTERVAL_S, so the
    last 50 ms of a stage's life and the frames capture sends before its ready
    file is seen are not counted. Where /proc is missing it records nothing.

    It also measures the share of the machine's CPU time that was idle from
    capture's ready file to the last sample. Much idle time with the frame rate
    below what the cores allow means the stages wait on each other, while little
    idle time means the run is bound by CPU, the pipeline's own or another program's.
    """

    def __init__(self, supervisor_pid: int, run_dir: Path):
        self.supervisor_pid = supervisor_pid
        self.run_dir = run_dir
        self.names: dict[int, str] = {}
        self.baseline: dict[int, float] = {}
        self.latest: dict[int, float] = {}
        self.machine_start: tuple[int, int] | None = None
        self.machine_latest: tuple[int, int] | None = None

    def sample(self) -> None:
        machine = read_machine_ticks()
        if self.machine_start is None and (self.run_dir / "capture.ready").exists():
            self.machine_start = machine
        self.machine_latest = machine
        for pid in child_pids(self.supervisor_pid):
            name = self.names.get(pid) or stage_name(pid)
            cpu_seconds = read_cpu_seconds(pid)
            if name is None or cpu_seconds is None:
                continue
            self.names[pid] = name
            if pid not in self.baseline and (self.run_dir / f"{name}.ready").exists():
                self.baseline[pid] = cpu_seconds
            self.latest[pid] = cpu_seconds

    def cpu_seconds(self) -> dict[str, float]:
        """Return CPU seconds per stage name, summed over restarts of the same stage."""
        totals: dict[str, float] = {}
        for pid, baseline in self.baseline.items():
            name = self.names[pid]
            totals[name] = totals.get(name, 0.0) + self.latest[pid] - baseline
        return totals


    def machine_idle_share(self) -> float | None:
        """Return the idle share of all cores' time since capture was ready, or None without /proc/stat."""
        if self.machine_start is None or self.machine_latest is None:
            return None
        idle = self.machine_latest[0] - self.machine_start[0]
        total = self.machine_latest[1] - self.machine_start[1]
        return idle / total if total > 0 else None


def read_machine_ticks() -> tuple[int, int] | None:
    """Return the idle and total clock ticks of all cores from /proc/stat, or None where it is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return None
    # The first line sums all cores: user nice system idle iowait irq softirq steal ...
    return fields[3] + fields[4], sum(fields[:8])


def child_pids(parent: int) -> list[int]:
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    children = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process exited while the list was read
        if int(fields[1]) == parent:
            children.append(int(entry))
    return children


def read_cpu_seconds(pid: int) -> float | None:
    """Return the user plus system CPU time of a process in seconds, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the closing bracket of the name.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def stage_name(pid: int) -> str | None:
    """Return the stage a process runs, from the --ready-file option that the supervisor gives it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            arguments = cmdline.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    if "--ready-file" not in arguments[:-1]:
        return None
    return Path(arguments[arguments.index("--ready-file") + 1]).stem


def pipeline_command(clip: Path, record: Path, events: Path, workers: int, realtime: bool, run_dir: Path,
                     ipc_dir: Path) -> list[str]:
    """Build the `emotion-pipeline run` command, with ipc endpoints in `ipc_dir` and no metrics servers."""
    command = [
        sys.executable, "-m", "common.cli", "--log-level", "WARNING", "run",
        "--source", str(clip), "--record", str(record), "--events", str(events),
        "--workers", str(workers), "--run-dir", str(run_dir),
    ]
    if realtime:
        command.append("--realtime")
    overrides = [f"endpoints.{name}='ipc://{ipc_dir / name}.ipc'" for name in ("frames", "crops", "results")]
    overrides += [f"metrics.{stage}=0" for stage in ("capture", "detector", "sink", "classifier")]
    for override in overrides:
        command += ["--set", override]
    return command


def run_pipeline(clip: Path, clip_frames: int, output_dir: Path, workers: int, realtime: bool = False,
                 keep_latencies: bool = False) -> dict:
    """Run the pipeline once on `clip` and return its timing and the recorded frame count.

    With `keep_latencies`, the result also lists each frame's latency in ms
    under `frame_latencies_ms`.

    Raises PipelineRunError when the run fails or times out. A recording with
    frames missing is returned, with its count in `frames_recorded`.
    """
    mode = "realtime" if realtime else "fast"
    record = output_dir / f"pipeline_{mode}_{workers}w.mp4"
    events = output_dir / f"pipeline_{mode}_{workers}w.jsonl"
    # ipc paths are capped at 107 bytes, so the sockets go in a short temporary folder.
    ipc_dir = Path(tempfile.mkdtemp(prefix="emo-bench-"))
    run_dir = output_dir / f"run_{mode}_{workers}w"
    command = pipeline_command(clip, record, events, workers, realtime, run_dir, ipc_dir)
    started = time.monotonic()
    try:
        returncode, stderr, sampler = run_sampled(command, run_dir,
                                                  RUN_TIMEOUT_BASE_S + RUN_SECONDS_PER_FRAME * clip_frames)
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)
    if returncode != 0:
        raise PipelineRunError(f"the pipeline with {workers} workers failed on {clip} with exit status "
                               f"{returncode}: {stderr[-STDERR_TAIL_CHARS:]}")

    recorded = count_frames(record)
    timings = read_frame_timings(events)
    summary = summarize_timings(timings)
    if keep_latencies:
        summary["frame_latencies_ms"] = [timing.latency_ms for timing in timings]
    logger.info("Pipeline with %d workers (%s): %.1f fps, %d of %d frames recorded, %.1f s with start-up",
                workers, mode, summary["fps"], recorded, clip_frames, time.monotonic() - started)
    cpu_seconds = sampler.cpu_seconds()
    cpu_ms_per_frame = {name: 1000 * seconds / clip_frames for name, seconds in sorted(cpu_seconds.items())}
    slowest = sorted(timings, key=lambda timing: timing.latency_ms, reverse=True)[:SLOWEST_FRAMES]
    return summary | {
        "workers": workers, "realtime": realtime, "frames_read": clip_frames, "frames_recorded": recorded,
        "wall_seconds": time.monotonic() - started, "cpu_ms_per_frame": cpu_ms_per_frame,
        # Stage CPU time includes shut-down, so this slightly overstates the cores used while frames flowed.
        "cores_used": sum(cpu_seconds.values()) / summary["seconds"] if cpu_seconds else None,
        "machine_idle_share": sampler.machine_idle_share(),
        "slowest_frames": [{"frame_index": timing.frame_index, "latency_ms": timing.latency_ms} for timing in slowest],
        "warnings": [line for line in stderr.splitlines() if " WARNING " in line or " ERROR " in line][-MAX_WARNINGS:],
    }


def run_sampled(command: list[str], run_dir: Path, timeout_s: float) -> tuple[int, str, "StageCpuSampler"]:
    """Run the supervisor `command` while sampling its stages' CPU time; return its status, stderr and sampler.

    Raises PipelineRunError, after stopping the supervisor, when it runs past `timeout_s`.
    """
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        sampler = StageCpuSampler(process.pid, run_dir)
        deadline = time.monotonic() + timeout_s
        try:
            while process.poll() is None:
                if time.monotonic() > deadline:
                    raise PipelineRunError(f"the pipeline did not finish within {timeout_s:.0f} s: "
                                           f"{' '.join(command)}")
                sampler.sample()
                time.sleep(POLL_INTERVAL_S)
        finally:
            if process.poll() is None:
                # SIGINT takes the supervisor's own shutdown path, which stops every stage.
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    logger.warning("Supervisor %d did not stop within 30 s of SIGINT; killing it", process.pid)
                    process.kill()
                    process.wait()
        stderr.seek(0)
        return process.returncode, stderr.read(), sampler
