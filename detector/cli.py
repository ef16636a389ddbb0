"""The `emotion-pipeline detector` subcommand: the face detection process."""

import argparse
import logging
import threading

from common.config import ConfigError, load_config
from common.stage import add_stage_arguments, run_stage

logger = logging.getLogger(__name__)

EXIT_INVALID_ARGUMENTS = 2


def add_parser(subparsers) -> None:
    from detector.detectors import DETECTOR_NAMES

    parser = subparsers.add_parser(
        "detector",
        help="find faces in frames, send frames to the sink and face crops to the classifier workers",
        description=(
            "Receive frames from capture, find faces, cut each into a 48x48 gray crop prepared as in "
            "training, send the frame with its face boxes to the sink and hand the crops to classifier "
            "workers, which pull them by credit. Faces too small, clipped at the border or blurred are "
            "reported with the reason instead of classified. Options left out take their value from the "
            "pipeline config."
        ),
    )
    parser.add_argument("--input", default=None, metavar="ENDPOINT",
                        help="endpoint to bind for frames from capture (default: endpoints.frames)")
    parser.add_argument("--work", default=None, metavar="ENDPOINT",
                        help="endpoint to bind for classifier workers (default: endpoints.crops)")
    parser.add_argument("--output", default=None, metavar="ENDPOINT",
                        help="the sink's endpoint to push frames to (default: endpoints.results)")
    parser.add_argument("--backend", choices=DETECTOR_NAMES, default=None,
                        help="face detector (default: detector.backend)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="TCP port of the metrics server; 0 disables it (default: metrics.detector)")
    add_stage_arguments(parser)
    parser.set_defaults(handler=run_detector, stage="detector")


def run_detector(args: argparse.Namespace) -> int:
    from detector.quality import QualityConfig
    from detector.stage import DetectorStage

    overrides = list(args.overrides)
    if args.backend is not None:
        overrides.append(f"detector.backend={args.backend}")
    try:
        config = load_config(args.config, overrides)
    except ConfigError as error:
        logger.error("%s", error)
        return EXIT_INVALID_ARGUMENTS

    settings = config.detector
    stop_event = threading.Event()
    logic = DetectorStage(
        args.input or config.endpoints.frames,
        args.work or config.endpoints.crops,
        args.output or config.endpoints.results,
        backend=settings.backend,
        quality=QualityConfig(min_face_side=settings.min_face_size),
        input_hwm=settings.input_hwm,
        max_backlog=settings.max_backlog,
        stop_event=stop_event,
    )
    metrics_port = config.metrics.detector if args.metrics_port is None else args.metrics_port
    return run_stage(
        logic,
        stage="detector",
        log_level=args.log_level,
        metrics_port=metrics_port or None,
        metrics_host=config.metrics.host,
        ready_file=args.ready_file,
        stop_event=stop_event,
    )
