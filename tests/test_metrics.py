import socket
import subprocess
import urllib.request

import pytest
from prometheus_client import REGISTRY

from common import metrics

DECLARED = {
    "emotion_stage_latency_seconds": "histogram",
    "emotion_frames_total": "counter",
    "emotion_faces_total": "counter",
    "emotion_frames_dropped_total": "counter",
    "emotion_faces_rejected_total": "counter",
    "emotion_messages_rejected_total": "counter",
    "emotion_queue_depth": "gauge",
    "emotion_batch_size": "histogram",
    "emotion_end_to_end_latency_seconds": "histogram",
    "emotion_output_fps": "gauge",
    "emotion_stage_state": "gauge",
    "emotion_source_connected": "gauge",
    "emotion_source_reconnects_total": "counter",
}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def test_set_stage_state_marks_one_state():
    metrics.set_stage_state("test-state", "starting")
    metrics.set_stage_state("test-state", "ready")

    values = {state: REGISTRY.get_sample_value("emotion_stage_state", {"stage": "test-state", "state": state})
              for state in metrics.STAGE_STATES}
    assert values == {"starting": 0.0, "ready": 1.0, "degraded": 0.0, "stopping": 0.0}


def test_set_stage_state_rejects_unknown_state():
    with pytest.raises(ValueError, match="unknown stage state 'paused'"):
        metrics.set_stage_state("test-state", "paused")


def test_latency_buckets_resolve_milliseconds():
    buckets = metrics.STAGE_LATENCY_BUCKETS

    assert list(buckets) == sorted(buckets)
    assert sum(1 for bound in buckets if bound <= 0.033) >= 7  # within one frame at 30 fps


def test_start_metrics_server_rejects_bad_port():
    with pytest.raises(ValueError, match="from 0 to 65535"):
        metrics.start_metrics_server(70000)


def test_start_metrics_server_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()

        with pytest.raises(OSError):
            metrics.start_metrics_server(taken.getsockname()[1])


def test_process_serves_declared_metrics(start_process, tmp_path, wait_until):
    port_file = tmp_path / "port"
    server = start_process("metrics_server.py", port_file, stdin=subprocess.PIPE)
    assert wait_until(lambda: port_file.exists() or server.poll() is not None)
    assert server.poll() is None, server.stderr.read()

    text = scrape(int(port_file.read_text()))
    server.stdin.close()
    exit_code = server.wait(timeout=10)

    for name, kind in DECLARED.items():
        assert f"# TYPE {name} {kind}" in text, name
    assert 'emotion_frames_total{source="cam0",stage="detector"} 3.0' in text
    assert 'emotion_messages_rejected_total{reason="malformed",stage="detector"} 1.0' in text
    assert 'emotion_stage_state{stage="detector",state="ready"} 1.0' in text
    assert 'emotion_stage_latency_seconds_bucket{le="0.005",source="cam0",stage="detector"} 1.0' in text
    assert 'emotion_stage_latency_seconds_bucket{le="0.002",source="cam0",stage="detector"} 0.0' in text
    assert exit_code == 0
