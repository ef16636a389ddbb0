"""The `emotion-pipeline capture` subcommand: one capture process per source."""

import argparse
import logging

from common.config import CaptureConfig, ConfigError, load_config
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
    parser.add_argument("--open-timeout", type=positive_float, default=None, metavar="SECONDS",
                        help="maximum wait for a stream to open, including each reopen, in seconds "
                             "(default: capture.open_timeout_s)")
    parser.add_argument("--read-timeout", type=positive_float, default=None, metavar="SECONDS",
                        help="maximum time one read of a stream may block, in seconds "
                             "(default: capture.read_timeout_s)")
    parser.add_argument("--stall-timeout", type=positive_float, default=None, metavar="SECONDS",
                        help="treat a live source that delivers no frame for this long as lost and reopen it, "
                             "in seconds (default: capture.stall_timeout_s)")
    parser.add_argument("--rtsp-transport", choices=("tcp", "udp"), default=None,
                        help="RTSP transport, unless OPENCV_FFMPEG_CAPTURE_OPTIONS sets one "
                             "(default: capture.rtsp_transport)")
    parser.add_argument("--reconnect-delay", type=positive_float, default=None, metavar="SECONDS",
                        help="wait before the first reopen of a lost live source, doubled after each failed "
                             "attempt, in seconds (default: capture.reconnect_delay_s)")
    parser.add_argument("--reconnect-max-delay", type=positive_float, default=None, metavar="SECONDS",
                        help="maximum wait between reopen attempts, in seconds "
                             "(default: capture.reconnect_max_delay_s)")
    parser.add_argument("--reconnect-attempts", type=non_negative_int, default=None,
                        help="failed reopen attempts in a row before a live source ends; 0 ends it at the first "
                             "loss (default: capture.reconnect_attempts, else no limit)")

    parser.add_argument("--metrics-port", type=int, default=None,
                        help="TCP port of the metrics server; 0 disables it (default: metrics.capture)")
    add_stage_arguments(parser)
    parser.set_defaults(handler=run_capture, stage="capture")


def run_capture(args: argparse.Namespace) -> int:
    from capture.factory import create_source
    from capture.sources import SourceError
    from capture.stage import CaptureStage

    try:
        config = load_config(args.config, [*args.overrides, *live_overrides(args)])
    except ConfigError as error:
        logger.error("%s", error)
        return EXIT_INVALID_ARGUMENTS

    settings = config.capture
    spec = args.source if args.source is not None else settings.source
    source_id = args.source_id or settings.source_id
    try:
        source = create_source(spec, stream_options(settings))
        reconnect = reconnect_policy(settings)
    except (SourceError, ValueError) as error:
        logger.error("%s", error)
        return EXIT_INVALID_ARGUMENTS

    logic = CaptureStage(
        source,
        args.output or config.endpoints.frames,
        source_id=source_id,
        realtime=settings.realtime if args.realtime is None else args.realtime,
        hwm=args.hwm or settings.output_hwm,
        reconnect=reconnect,
        stall_timeout_s=settings.stall_timeout_s,
    )
    metrics_port = config.metrics.capture if args.metrics_port is None else args.metrics_port
    return run_stage(logic, stage="capture", source=source_id, log_level=args.log_level,
                     metrics_port=metrics_port or None, metrics_host=config.metrics.host,
                     ready_file=args.ready_file)


def live_overrides(args: argparse.Namespace) -> list[str]:
    """Turn the live-source options into capture config overrides, so the config checks them all together."""
    options = {
        "open_timeout_s": args.open_timeout,
        "read_timeout_s": args.read_timeout,
        "stall_timeout_s": args.stall_timeout,
        "reconnect_delay_s": args.reconnect_delay,
        "reconnect_max_delay_s": args.reconnect_max_delay,
        "reconnect_attempts": args.reconnect_attempts,
    }
    overrides = [f"capture.{key}={value!r}" for key, value in options.items() if value is not None]
    if args.rtsp_transport is not None:
        overrides.append(f"capture.rtsp_transport='{args.rtsp_transport}'")
    return overrides


def stream_options(settings: CaptureConfig):
    from capture.factory import StreamOptions

    # A read that blocks longer than the stall timeout would keep a stalled stream from being
    # reopened in time, so FFmpeg's read timeout is the shorter of the two.
    return StreamOptions(open_timeout_s=settings.open_timeout_s,
                         read_timeout_s=min(settings.read_timeout_s, settings.stall_timeout_s),
                         rtsp_transport=settings.rtsp_transport)


def reconnect_policy(settings: CaptureConfig):
    from capture.live import ReconnectPolicy

    return ReconnectPolicy(delay_s=settings.reconnect_delay_s, max_delay_s=settings.reconnect_max_delay_s,
                           max_attempts=settings.reconnect_attempts)
