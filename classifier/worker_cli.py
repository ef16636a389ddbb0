"""The `emotion-pipeline classifier` subcommand: one classifier worker process."""

import argparse
import logging
import threading
from pathlib import Path

from common.arguments import non_negative_float
from common.config import ConfigError, load_config
from common.stage import add_stage_arguments, run_stage

logger = logging.getLogger(__name__)

EXIT_INVALID_ARGUMENTS = 2


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "classifier",
        help="run one classifier worker: batch face crops and classify their emotions",
        description=(
            "Connect to the detector's work endpoint, collect face crops from many frames into batches "
            "(up to --max-batch faces, or --max-delay-ms after the oldest arrived), run the emotion CNN once "
            "per batch and push each frame's results to the sink. Start several to share the load. "
            "Options left out take their value from the pipeline config."
        ),
    )
    parser.add_argument("--work", default=None, metavar="ENDPOINT",
                        help="the detector's work endpoint to connect to (default: endpoints.crops)")
    parser.add_argument("--output", default=None, metavar="ENDPOINT",
                        help="the sink's endpoint to push results to (default: endpoints.results)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="maximum faces in one CNN batch (default: classifier.max_batch)")
    parser.add_argument("--max-delay-ms", type=float, default=None,
                        help="maximum wait in milliseconds after the oldest face arrived before a partial "
                             "batch runs (default: classifier.max_delay_ms)")
    parser.add_argument("--model", type=Path, default=None,
                        help="model file, .keras or .tflite (default: classifier.model, else the shipped model)")
    parser.add_argument("--backend", choices=("keras", "litert"), default=None,
                        help="inference backend (default: from the suffix of --model or classifier.model, else classifier.backend)")
    parser.add_argument("--slow-down-ms", type=non_negative_float, default=0.0, metavar="MILLISECONDS",
                        help="test and benchmark aid: wait this many milliseconds per face after each batch, "
                             "to make the classifier the bottleneck on purpose (default: 0)")
    parser.add_argument("--worker-index", type=int, default=0,
                        help="index of this worker among the pipeline's workers; its metrics port is "
                             "metrics.classifier plus this index (default: 0)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="TCP port of the metrics server; 0 disables it "
                             "(default: metrics.classifier plus --worker-index)")
    add_stage_arguments(parser)
    parser.set_defaults(handler=run_classifier, stage="classifier")


def run_classifier(args: argparse.Namespace) -> int:
    from classifier.worker import ClassifierWorker

    overrides = list(args.overrides)
    for key, value in (("classifier.max_batch", args.max_batch), ("classifier.max_delay_ms", args.max_delay_ms)):
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        config = load_config(args.config, overrides)
    except ConfigError as error:
        logger.error("%s", error)
        return EXIT_INVALID_ARGUMENTS

    settings = config.classifier
    model_path = args.model or settings.model
    # A model file given without a backend decides the backend by its suffix.
    if args.backend is not None:
        backend = args.backend
    elif model_path is not None:
        backend = "litert" if Path(model_path).suffix == ".tflite" else "keras"
    else:
        backend = settings.backend

    stop_event = threading.Event()
    logic = ClassifierWorker(
        args.work or config.endpoints.crops,
        args.output or config.endpoints.results,
        max_batch=settings.max_batch,
        max_delay_ms=settings.max_delay_ms,
        model_path=model_path,
        backend=backend,
        flip_average=settings.flip_average,
        zoom_views=tuple(settings.zoom_views),
        stop_event=stop_event,
        slow_down_ms=args.slow_down_ms,
    )
    metrics_port = args.metrics_port
    if metrics_port is None:
        metrics_port = config.metrics.port_for("classifier", args.worker_index)
    return run_stage(
        logic,
        stage="classifier",
        log_name=f"classifier-{args.worker_index}",
        log_level=args.log_level,
        metrics_port=metrics_port or None,
        metrics_host=config.metrics.host,
        ready_file=args.ready_file,
        stop_event=stop_event,
    )
