"""The `emotion-pipeline capture` subcommand: one capture process per source."""

import argparse
import logging

from common.config import ConfigError, load_config
from common.stage import add_stage_arguments, run_stage
from common.arguments import non_negative_int, positive_float, positive_int

logger = logging.getLogger(__name__)

EXIT_INVALID_ARGUMENTS = 2


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "capture",
        help="read a video source and send its frames to the detector",
        description=(
            "Read a video file, an image, a folder of images, an RTSP or HTTP(S) stream or a webcam and push "
            "one frame message per decoded frame to the detector. Without --source, a built-in 3 s demo "
            "clip of a moving portrait. File sources send every frame and end with an end-of-stream "
            "message. Options left out take their value from the pipeline config."
        ),
    )
    parser.add_argument("--source", default=None,
                        help="video file, image, folder of images, rtsp:// or http(s):// URL, webcam index "
                             "(0) or /dev/videoN, or `demo` (default: capture.source, else the demo)")
    parser.add_argument("--source-id", default=None,
                        help="name of the source in messages, logs and metrics (default: capture.source_id)")
    parser.add_argument("--output", default=None, metavar="ENDPOINT",
                        help="ZeroMQ endpoint of the detector to push frames to (default: endpoints.frames)")
    parser.add_argument("--realtime", action="store_true", default=None,
                        help="pace file sources at their frame rate instead of as fast as the detector accepts")
    parser.add_argument("--hwm", type=positive_int, default=None,
                        help="frames queued toward the detector before a send waits or a live source drops "
                             "(default: capture.output_hwm)")

    # Live sources only.
    parser.add_argument("--open-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                        help="maximum time to wait for a stream to open, in seconds (default: 10)")
    parser.add_argument("--read-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                        help="maximum time to wait for the next frame of a stream, in seconds (default: 10)")
    parser.add_argument("--rtsp-transport", choices=("tcp", "udp"), default="tcp",
                        help="RTSP transport, unless OPENCV_FFMPEG_CAPTURE_OPTIONS sets one (default: tcp)")
    parser.add_argument("--reconnect-attempts", type=non_negative_int, default=3,
                        help="times to reopen a live source that stopped delivering frames (default: 3)")

    parser.add_argument("--metrics-port", type=int, default=None,
                        help="TCP port of the metrics server; 0 disables it (default: metrics.capture)")
    add_stage_arguments(parser)
    parser.set_defaults(handler=run_capture, stage="capture")


def run_capture(args: argparse.Namespace) -> int:
    from capture.factory import StreamOptions, create_source
    from capture.sources import SourceError
    from capture.stage import CaptureStage

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        logger.error("%s", error)
        return EXIT_INVALID_ARGUMENTS

    spec = args.source if args.source is not None else config.capture.source
    source_id = args.source_id or config.capture.source_id
    options = StreamOptions(open_timeout_s=args.open_timeout, read_timeout_s=args.read_timeout,
                            rtsp_transport=args.rtsp_transport)
    try:
        source = create_source(spec, options)
    except SourceError as error:
        logger.error("%s", error)
        return EXIT_INVALID_ARGUMENTS

    logic = CaptureStage(
        source,
        args.output or config.endpoints.frames,
        source_id=source_id,
        realtime=config.capture.realtime if args.realtime is None else args.realtime,
        hwm=args.hwm or config.capture.output_hwm,
        reconnect_attempts=args.reconnect_attempts,
    )
    metrics_port = config.metrics.capture if args.metrics_port is None else args.metrics_port
    return run_stage(logic, stage="capture", source=source_id, log_level=args.log_level,
                     metrics_port=metrics_port or None, metrics_host=config.metrics.host,
                     ready_file=args.ready_file)

