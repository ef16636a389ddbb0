"""The `emotion-pipeline` command: one subcommand per job and per stage process."""

import argparse
import logging
import os
import sys

from common.logs import LOG_LEVELS, setup_logging

logger = logging.getLogger(__name__)

# Each entry names a module with `add_parser(subparsers)`; the parser it adds
# stores a `handler(args) -> int` and a `stage` name in its defaults.
SUBCOMMAND_MODULES = (
    "classifier.train_cli",
    "common.config_cli",
    "classifier.evaluate_cli", "classifier.export_cli",
    "capture.cli", "sink.cli",
    "detector.cli", "classifier.worker_cli", "common.run_cli",
    "common.bench_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-pipeline",
        description="Real-time facial emotion recognition over a multi-process ZeroMQ pipeline.",
    )
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
        help="lowest severity of log lines written to stderr (default: INFO)",
    )
    subparsers = parser.add_subparsers(title="subcommands", dest="command", required=True)

    import importlib

    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter (CUDA probes on CPU-only machines) hides real log lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    args = build_parser().parse_args(argv)
    setup_logging(args.stage, args.log_level, getattr(args, "source_id", None))
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        logger.info("Interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
