"""Prometheus metrics of every stage process, each declared once here.

Names start with `emotion_` and carry a `stage` label and, where the value
belongs to one video source, a `source` label. Each process serves them with
`start_metrics_server` at http://HOST:PORT/metrics.

Latency buckets are in seconds but sized for milliseconds: at 30 fps a frame
has a 33 ms budget, and the stages range from about 1 ms (a ZeroMQ hop) to tens
of milliseconds (face detection, a CNN batch). The client's default buckets
start at 5 ms and jump from 10 to 25 to 50 ms, too coarse to tell a stage that
fits the budget from one that does not.
"""

import logging
import urllib.request

from prometheus_client import Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

STAGE_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.010, 0.015, 0.020, 0.030, 0.050, 0.075, 0.100, 0.200, 0.500, 1.0,
)
# Capture to sink crosses every stage and the classifier's batching delay, so it reaches further.
END_TO_END_BUCKETS = (
    0.005, 0.010, 0.020, 0.030, 0.050, 0.075, 0.100, 0.150, 0.200, 0.300, 0.500, 0.750, 1.0, 2.0, 5.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

STAGE_STATES = ("starting", "ready", "degraded", "stopping")
# States of a live source in capture: see capture.live.LatestFrameReader.
SOURCE_STATES = ("connecting", "streaming", "stalled", "reconnecting", "ended")

STAGE_LATENCY = Histogram(
    "emotion_stage_latency_seconds",
    "Time a stage spent on one frame, from receiving it to sending its result, in seconds.",
    ["stage", "source"],
    buckets=STAGE_LATENCY_BUCKETS,
)
FRAMES = Counter(
    "emotion_frames_total",
    "Frames a stage finished processing.",
    ["stage", "source"],
)
FACES = Counter(
    "emotion_faces_total",
    "Faces a stage finished processing.",
    ["stage", "source"],
)
FRAMES_DROPPED = Counter(
    "emotion_frames_dropped_total",
    "Frames a stage dropped, by reason (for example stale, downstream_full, classification_timeout).",
    ["stage", "source", "reason"],
)
FACES_REJECTED = Counter(
    "emotion_faces_rejected_total",
    "Detected faces left unclassified, by reason (for example too_small, clipped, blurred).",
    ["stage", "source", "reason"],
)
MESSAGES_REJECTED = Counter(
    "emotion_messages_rejected_total",
    "Received messages that failed validation and were skipped, by reason "
    "(malformed, truncated, oversized, wrong_version, unknown_kind, invalid_field).",
    ["stage", "reason"],
)
QUEUE_DEPTH = Gauge(
    "emotion_queue_depth",
    "Items waiting inside a stage (frames or faces, as the stage defines), sampled when it changes.",
    ["stage"],
)
BATCH_SIZE = Histogram(
    "emotion_batch_size",
    "Faces per classifier batch.",
    ["stage"],
    buckets=BATCH_SIZE_BUCKETS,
)
END_TO_END_LATENCY = Histogram(
    "emotion_end_to_end_latency_seconds",
    "Time from capture reading a frame to the sink releasing it, in seconds.",
    ["source"],
    buckets=END_TO_END_BUCKETS,
)
OUTPUT_FPS = Gauge(
    "emotion_output_fps",
    "Frames per second the sink releases, averaged over its last measuring window.",
    ["source"],
)
STAGE_STATE = Gauge(
    "emotion_stage_state",
    "1 for the state a stage process is in, 0 for the others: " + ", ".join(STAGE_STATES) + ".",
    ["stage", "state"],
)
SOURCE_CONNECTED = Gauge(
    "emotion_source_connected",
    "1 while a live source delivers frames, 0 while it is disconnected or reconnecting.",
    ["source"],
)
SOURCE_RECONNECTS = Counter(
    "emotion_source_reconnects_total",
    "Attempts to reopen a live source after it failed.",
    ["source"],
)
SOURCE_STATE = Gauge(
    "emotion_source_state",
    "1 for the state a live source is in, 0 for the others: " + ", ".join(SOURCE_STATES) + ".",
    ["source", "state"],
)


def set_stage_state(stage: str, state: str) -> None:
    """Publish `state` as the one current state of `stage`."""
    if state not in STAGE_STATES:
        raise ValueError(f"unknown stage state {state!r}, expected one of {STAGE_STATES}")
    for name in STAGE_STATES:
        STAGE_STATE.labels(stage=stage, state=name).set(1 if name == state else 0)


def set_source_state(source: str, state: str) -> None:
    """Publish `state` as the one current state of the live source `source`."""
    if state not in SOURCE_STATES:
        raise ValueError(f"unknown source state {state!r}, expected one of {SOURCE_STATES}")
    for name in SOURCE_STATES:
        SOURCE_STATE.labels(source=source, state=name).set(1 if name == state else 0)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> int:
    """Serve the metrics at http://HOST:PORT/metrics from a daemon thread and return the bound port.

    Port 0 binds a free port chosen by the system. The server lives as long as the
    process. Raises OSError when the port is taken.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port must be from 0 to 65535, got {port}")
    # prometheus_client returns (server, thread) since version 0.20.
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as error:
        raise OSError(
            error.errno,
            f"cannot serve metrics on {host}:{port}: {error.strerror}. Choose another port with the "
            "metrics.* config keys (--set metrics.sink=9303, or a stage's --metrics-port), or 0 to disable "
            "metrics",
        ) from error
    bound_port = server.server_port
    logger.info("Serving metrics at http://%s:%d/metrics", host, bound_port)
    return bound_port


def scrape_metrics(port: int, host: str = "127.0.0.1", timeout_s: float = 5.0) -> str:
    """Fetch the text that a stage's metrics server serves at /metrics.

    Raises OSError (urllib's URLError or HTTPError) when the server is unreachable or returns an error status.
    """
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s) as response:
        return response.read().decode()
