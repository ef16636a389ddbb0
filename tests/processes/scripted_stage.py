"""A stand-in stage process for supervisor tests, whose behaviour the test scripts.

Usage: scripted_stage.py BEHAVIOUR STATE_DIR --ready-file PATH

BEHAVIOUR is one of:
  serve        become ready, then run until SIGTERM and exit 0
  finish       become ready, then exit 0 once STATE_DIR/finish exists
  crash-once   become ready; on the first start exit 3 soon after, later starts serve
  crash        exit 3 before becoming ready, after printing an error line and then an info line
  quick-exit   exit 0 at once without becoming ready, as a very short file source does
Each start appends its pid to STATE_DIR/<BEHAVIOUR>.pids, and the value of
EMOTION_PIPELINE_CAPTURE_FINISHED it was given ("unset" when absent) to
STATE_DIR/<BEHAVIOUR>.capture_finished.
"""

import os
import signal
import sys
import time
from pathlib import Path

behaviour, state_dir = sys.argv[1], Path(sys.argv[2])
ready_file = Path(sys.argv[sys.argv.index("--ready-file") + 1])

pid_log = state_dir / f"{behaviour}.pids"
starts = len(pid_log.read_text().split()) if pid_log.exists() else 0
with pid_log.open("a") as log:
    log.write(f"{os.getpid()}\n")
with (state_dir / f"{behaviour}.capture_finished").open("a") as log:
    log.write(os.environ.get("EMOTION_PIPELINE_CAPTURE_FINISHED", "unset") + "\n")

stopping = False


def stop(signum, frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)

if behaviour == "crash":
    print("12:00:00 ERROR   [classifier] model file not found: /nonexistent/model.keras", file=sys.stderr)
    print("12:00:00 INFO    [classifier] Stage classifier stopped with exit code 3", file=sys.stderr, flush=True)
    sys.exit(3)
if behaviour == "quick-exit":
    sys.exit(0)

ready_file.write_text("ready\n")

deadline = time.monotonic() + 60  # never outlive a broken test by long
while not stopping and time.monotonic() < deadline:
    if behaviour == "crash-once" and starts == 0:
        print("simulated crash", file=sys.stderr, flush=True)
        sys.exit(3)
    if behaviour == "finish" and (state_dir / "finish").exists():
        break
    time.sleep(0.02)

(state_dir / f"{behaviour}.stopped").write_text(f"{os.getpid()}\n")
sys.exit(0)
