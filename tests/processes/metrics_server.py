"""Serve the pipeline's metrics on a free port until standard input closes.

Usage: metrics_server.py PORT_FILE

Records a few samples, starts the metrics server on a free port on 127.0.0.1,
writes the port to PORT_FILE (atomically) and exits 0 when stdin reaches its end.
"""

import os
import sys
from pathlib import Path

from common import metrics

port_file = Path(sys.argv[1])

metrics.FRAMES.labels(stage="detector", source="cam0").inc(3)
metrics.STAGE_LATENCY.labels(stage="detector", source="cam0").observe(0.004)
metrics.MESSAGES_REJECTED.labels(stage="detector", reason="malformed").inc()
metrics.set_stage_state("detector", "ready")

port = metrics.start_metrics_server(0)
temporary = port_file.with_suffix(".tmp")
temporary.write_text(str(port))
os.replace(temporary, port_file)

sys.stdin.read()
