"""Soak benchmark: a live RTSP source at real-time pace through every stage, with the classifier slowed on purpose.

It loops a clip into one long H.264 file and serves it with tests/rtsp_server.py
on 127.0.0.1. It starts the sink, one classifier worker (with --slow-down-ms),
the detector and capture as separate processes. Every --sample-every-s seconds
it records end-to-end latency (the `latency_ms` of the sink's events), the
capture's drop counters by reason, the source state and the resident memory of
every stage process. It prints a markdown table and writes the samples as JSON.

    /work/venv/bin/python benchmarks/soak.py --minutes 10 --output soak.json

This is a benchmark, not a test: it asserts nothing and takes as long as asked.
"""

import argparse
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.metrics import scrape_metrics
from common.transport import free_tcp_ports

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO_ROOT.parent / "shared" / "media" / "street_phone_596x336.mp4"
SERVER_SCRIPT = REPO_ROOT / "tests" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
STAGES = ("sink", "classifier", "detector", "capture")  # start order; stop order is the reverse
DROP_SAMPLE = re.compile(r'^emotion_frames_dropped_total\{reason="([^"]+)",source="[^"]+",stage="capture"\} (\S+)$',
                         re.MULTILINE)
STATE_SAMPLE = re.compile(r'^emotion_source_state\{source="[^"]+",state="([^"]+)"\} 1\.0$', re.MULTILINE)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run in minutes (default: 10)")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="H.264 MP4 to loop (default: the street clip)")
    parser.add_argument("--slow-down-ms", type=float, default=60.0,
                        help="classifier slow-down per face in milliseconds; 60 ms caps it near 16 faces/s, "
                             "below the clip's 25 fps (default: 60)")
    parser.add_argument("--sample-every-s", type=float, default=10.0, help="seconds between samples (default: 10)")
    parser.add_argument("--output", type=Path, default=Path("soak.json"),
                        help="JSON file to write (default: soak.json)")
    return parser.parse_args()


def loop_clip(clip: Path, minutes: float, folder: Path) -> Path:
    """Write the clip repeated to last longer than `minutes`, without re-encoding."""
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(clip)],
                           capture_output=True, text=True, check=True, timeout=60)
    repeats = math.ceil(minutes * 60 / float(probe.stdout.strip())) + 1
    looped = folder / "looped.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(repeats), "-i", str(clip), "-c", "copy",
                    str(looped)], check=True, timeout=300)
    return looped


def start_server(video: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([SYSTEM_PYTHON, str(SERVER_SCRIPT), "--video", str(video)], stdout=subprocess.PIPE,
                              text=True)
    line = server.stdout.readline()
    if not line.startswith("ready "):
        server.kill()
        raise SystemExit(f"the RTSP server did not start: {line!r}")
    return server, line.split()[1]


def start_stages(url: str, folder: Path, slow_down_ms: float) -> tuple[dict[str, subprocess.Popen], dict[str, int]]:
    ports = dict(zip(STAGES, free_tcp_ports(len(STAGES))))
    config = folder / "pipeline.toml"
    config.write_text("\n".join([
        "[capture]", f"source = '{url}'", "source_id = 'soak'",
        "[sink]", f"events = '{folder / 'events.jsonl'}'",
        "[endpoints]", f"frames = 'ipc://{folder}/frames.ipc'", f"crops = 'ipc://{folder}/crops.ipc'",
        f"results = 'ipc://{folder}/results.ipc'",
        "[metrics]", *(f"{stage} = {port}" for stage, port in ports.items()),
    ]) + "\n")
    processes = {}
    for stage in STAGES:
        extra = ["--slow-down-ms", str(slow_down_ms)] if stage == "classifier" else []
        ready_file = folder / f"{stage}.ready"
        command = [sys.executable, "-m", "common.cli", "--log-level", "WARNING", stage, "--config", str(config),
                   "--ready-file", str(ready_file), *extra]
        processes[stage] = subprocess.Popen(command, cwd=REPO_ROOT, stderr=open(folder / f"{stage}.log", "w"))
        deadline = time.monotonic() + 180
        while not ready_file.exists():
            if processes[stage].poll() is not None or time.monotonic() > deadline:
                stop_stages(processes)
                raise SystemExit(f"stage {stage} did not get ready; see {folder / f'{stage}.log'}")
            time.sleep(0.2)
    return processes, ports


def stop_stages(processes: dict[str, subprocess.Popen]) -> None:
    for stage in reversed(STAGES):
        process = processes.get(stage)
        if process is None or process.poll() is not None:
            continue
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def resident_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def scrape(port: int) -> str:
    try:
        return scrape_metrics(port)
    except OSError:
        return ""


class EventTail:
    """Read the latency of the events the sink appended since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def new_latencies_ms(self) -> list[float]:
        if not self.path.exists():
            return []
        with open(self.path) as file:
            file.seek(self.offset)
            text = file.read()
        complete = text[: text.rfind("\n") + 1]
        self.offset += len(complete.encode())
        return [json.loads(line)["latency_ms"] for line in complete.splitlines() if line.strip()]


def take_sample(elapsed_s: float, latencies_ms: list[float], processes, ports) -> dict:
    capture_metrics = scrape(ports["capture"])
    states = STATE_SAMPLE.findall(capture_metrics)
    return {
        "elapsed_s": round(elapsed_s, 1),
        "faces": len(latencies_ms),
        "latency_p50_ms": round(float(np.percentile(latencies_ms, 50)), 1) if latencies_ms else None,
        "latency_p99_ms": round(float(np.percentile(latencies_ms, 99)), 1) if latencies_ms else None,
        "capture_drops": {reason: float(value) for reason, value in DROP_SAMPLE.findall(capture_metrics)},
        "source_state": states[0] if states else None,
        "rss_mib": {stage: resident_mib(process.pid) for stage, process in processes.items()},
    }


def markdown_table(samples: list[dict]) -> str:
    reasons = sorted({reason for sample in samples for reason in sample["capture_drops"]})
    header = ["time (s)", "faces", "p50 (ms)", "p99 (ms)", "state", *(f"dropped {r}" for r in reasons),
              *(f"{stage} RSS (MiB)" for stage in STAGES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for sample in samples:
        rss = [f"{sample['rss_mib'][stage]:.0f}" if sample["rss_mib"].get(stage) else "-" for stage in STAGES]
        row = [str(sample["elapsed_s"]), str(sample["faces"]), str(sample["latency_p50_ms"]),
               str(sample["latency_p99_ms"]), str(sample["source_state"]),
               *(f"{sample['capture_drops'].get(r, 0):.0f}" for r in reasons), *rss]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    args = parse_arguments()
    if shutil.which("ffmpeg") is None or not args.clip.is_file():
        raise SystemExit(f"needs ffmpeg and the clip {args.clip}")
    folder = Path(tempfile.mkdtemp(prefix="emotion-soak-"))
    server, url = start_server(loop_clip(args.clip, args.minutes, folder))
    processes: dict[str, subprocess.Popen] = {}
    samples = []
    try:
        processes, ports = start_stages(url, folder, args.slow_down_ms)
        events = EventTail(folder / "events.jsonl")
        started = time.monotonic()
        all_latencies: list[float] = []
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.sample_every_s)
            latencies = events.new_latencies_ms()
            all_latencies += latencies
            samples.append(take_sample(time.monotonic() - started, latencies, processes, ports))
            print(markdown_table(samples[-1:]).splitlines()[-1], flush=True)
    finally:
        stop_stages(processes)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)

    summary = {
        "minutes": args.minutes, "slow_down_ms": args.slow_down_ms, "clip": str(args.clip),
        "faces": len(all_latencies),
        "latency_p50_ms": round(float(np.percentile(all_latencies, 50)), 1) if all_latencies else None,
        "latency_p99_ms": round(float(np.percentile(all_latencies, 99)), 1) if all_latencies else None,
        "exit_codes": {stage: process.returncode for stage, process in processes.items()},
        "logs": str(folder),
    }
    args.output.write_text(json.dumps({"summary": summary, "samples": samples}, indent=2) + "\n")
    print()
    print(markdown_table(samples))
    print()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
