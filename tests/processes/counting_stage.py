"""A stage process whose logic only counts steps, for tests of the stage runner.

Usage: counting_stage.py CLOSED_FILE [--crash-after N] [--finish-after N] --ready-file PATH

Serves metrics on a free port and steps until SIGTERM or SIGINT. With
--crash-after N, step N raises RuntimeError; with --finish-after N, step N
returns False. close() writes "closed after N steps" to CLOSED_FILE.
"""

import argparse
import sys
import threading
from pathlib import Path

from common.stage import StageRunner, add_stage_arguments


class CountingLogic:
    def __init__(self, stop_event: threading.Event, closed_file: Path, crash_after: int | None,
                 finish_after: int | None):
        self.stop_event = stop_event
        self.closed_file = closed_file
        self.crash_after = crash_after
        self.finish_after = finish_after
        self.steps = 0

    def setup(self) -> None:
        pass

    def step(self, timeout_s: float) -> bool:
        self.stop_event.wait(timeout_s)  # where a real stage receives with a timeout
        self.steps += 1
        if self.steps == self.crash_after:
            raise RuntimeError(f"planned crash at step {self.steps}")
        return self.steps != self.finish_after

    def close(self) -> None:
        self.closed_file.write_text(f"closed after {self.steps} steps\n")


parser = argparse.ArgumentParser()
parser.add_argument("closed_file", type=Path)
parser.add_argument("--crash-after", type=int, default=None)
parser.add_argument("--finish-after", type=int, default=None)
add_stage_arguments(parser)
args = parser.parse_args()

stop_event = threading.Event()
logic = CountingLogic(stop_event, args.closed_file, args.crash_after, args.finish_after)
runner = StageRunner(logic, stage="counting", source="test", metrics_port=0, ready_file=args.ready_file,
                     step_timeout_s=0.05, stop_event=stop_event)
sys.exit(runner.run())
