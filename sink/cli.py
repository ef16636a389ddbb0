"""The `emotion-pipeline sink` subcommand: the last stage, which writes the annotated outputs."""

import argparse
import logging
import os
from pathlib import Path

from common.arguments import positive_float, positive_int
from common.config import ConfigError, load_config
from common.stage import add_stage_arguments, run_stage
from common.supervisor import CAPTURE_FINISHED_VARIABLE, RESTART_COUNT_VARIABLE

logger = logging.getLogger(__name__)

EXIT_INVALID_ARGUMENTS = 2
MIN_IDLE_BEFORE_FINISH_S = 5.0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sink",
        help="join frames with their emotions and write annotated video, events and a window",
        description=(
            "Bind the results endpoint, join each frame from the detector with its classifications from the "
            "classifier workers, and release the frames in order per source to the recording, the events "
            "file and the window. Exits with status 0 once every source has sent its end of stream and every "
            "frame is written. Options left out take their value from the pipeline config."
        ),
    )
    parser.add_argument("--input", default=None, metavar="ENDPOINT",
                        help="ZeroMQ endpoint to bind for frames and classifications (default: endpoints.results)")
    parser.add_argument("--record", type=Path, default=None, metavar="PATH",
                        help="annotated video to write (.mp4, codec mp4v); `{source}` in the name is replaced by "
                             "the source id (default: sink.record, else none)")
    parser.add_argument("--events", type=Path, default=None, metavar="PATH",
                        help="JSON lines file with one event per face per frame (default: sink.events, else none)")
    parser.add_argument("--display", action="store_true", default=None,
                        help="show the annotated video in a window; needs DISPLAY or WAYLAND_DISPLAY")
    parser.add_argument("--sources", nargs="+", default=(), metavar="SOURCE_ID",
                        help="source ids to wait for before exiting (default: every source seen)")

    parser.add_argument("--classification-timeout-ms", type=positive_int, default=None,
                        help="maximum time to wait for a frame's classifications before it is released "
                             "unclassified, in milliseconds (default: sink.classification_timeout_ms)")
    parser.add_argument("--max-pending-frames", type=positive_int, default=None,
                        help="frames held while waiting for classifications before the oldest is dropped "
                             "(default: sink.max_pending_frames)")

    parser.add_argument("--hwm", type=positive_int, default=64,
                        help="messages queued in the input socket before senders wait or drop (default: 64)")
    parser.add_argument("--default-fps", type=positive_float, default=25.0,
                        help="frame rate of recordings whose source has none, such as image folders "
                             "(default: 25)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="TCP port of the metrics server; 0 disables it (default: metrics.sink)")
    add_stage_arguments(parser)
    parser.set_defaults(handler=run_sink, stage="sink")


def run_sink(args: argparse.Namespace) -> int:
    from sink.display import Display, DisplayError
    from sink.stage import SinkStage

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        logger.error("%s", error)
        return EXIT_INVALID_ARGUMENTS

    sink = config.sink
    display = sink.display if args.display is None else args.display
    if display:
        try:
            Display().open()
        except DisplayError as error:
            logger.error("%s", error)
            return EXIT_INVALID_ARGUMENTS

    record = args.record or sink.record
    events = args.events or sink.events
    restarts = int(os.environ.get(RESTART_COUNT_VARIABLE, "0") or 0)
    if restarts > 0:
        # A restarted sink must not overwrite what the crashed one wrote.
        record, events = part_path(record, restarts), part_path(events, restarts)
        outputs = " and ".join(str(path) for path in (record, events) if path is not None) or "no file"
        logger.warning("Sink restarted (restart %d): writing the rest of the run to %s", restarts, outputs)

    timeout_ms = args.classification_timeout_ms or sink.classification_timeout_ms
    finish_when_idle_s = None
    if os.environ.get(CAPTURE_FINISHED_VARIABLE) == "1":
        # Long enough for every classification still in flight to arrive or time out.
        finish_when_idle_s = max(MIN_IDLE_BEFORE_FINISH_S, 2 * timeout_ms / 1000)
        logger.warning("Capture finished before this sink started: finishing once no message came for %.1f s",
                       finish_when_idle_s)
    logic = SinkStage(
        args.input or config.endpoints.results,
        record=record,
        events=events,
        display=display,
        classification_timeout_s=timeout_ms / 1000,
        max_pending_frames=args.max_pending_frames or sink.max_pending_frames,
        hwm=args.hwm,
        expected_sources=args.sources,
        default_fps=args.default_fps,
        finish_when_idle_s=finish_when_idle_s,
    )
    metrics_port = config.metrics.sink if args.metrics_port is None else args.metrics_port
    return run_stage(logic, stage="sink", log_level=args.log_level, metrics_port=metrics_port or None,
                     metrics_host=config.metrics.host, ready_file=args.ready_file)


def part_path(path: Path | None, part: int) -> Path | None:
    """Return `out.part1.mp4` for `out.mp4` and part 1, or None for no path."""
    if path is None:
        return None
    path = Path(path)
    return path.with_name(f"{path.stem}.part{part}{path.suffix}")
