"""The `emotion-pipeline bench` subcommand: run the benchmark suite of a source checkout.

The suite lives in the checkout's `benchmarks` folder, beside the packages,
and is not part of the installed distribution. This command therefore works
only from a source checkout, and it puts the checkout's root on `sys.path` to
import it.
"""

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from common.arguments import positive_int

logger = logging.getLogger(__name__)

CHECKOUT_ROOT = Path(__file__).resolve().parents[1]
PARTS = ("classify", "detect", "pipeline", "live")
EXIT_INVALID_ARGUMENTS = 2
EXIT_BENCHMARK_FAILED = 1


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure classification, detection, the whole pipeline and live latency against baselines",
        description=(
            "Run the benchmark suite and print its results as markdown tables. Each figure is the median "
            "over the repeats and is compared with its baseline from the same run: model.predict per face "
            "for classification, a single-process loop and the fer package's loop for the pipeline. "
            "The pipeline and live parts need ffmpeg and a clip with one face per frame (--source-clip)."
        ),
    )
    parser.add_argument("--only", type=parse_parts, default=PARTS, metavar="PARTS",
                        help=f"comma-separated parts to run, from {','.join(PARTS)} (default: all)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the full results, with the machine's description, to this JSON file")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="repeats of every measurement; figures are medians over them (default: 3, "
                             "1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="shrink every measurement (50-frame clips, one worker count, fewer faces) to "
                             "check that the suite runs; the figures are not benchmark results")
    parser.add_argument("--fer-python", type=Path, default=None, metavar="PATH",
                        help="Python of a virtual environment with the fer package, to run its loop as a "
                             "peer on the pipeline clip (default: skip the fer loop)")
    parser.add_argument("--workers", type=parse_workers, default=None, metavar="COUNTS",
                        help="comma-separated classifier worker counts for the pipeline part "
                             "(default: 1,2,4, or 1 with --quick)")
    parser.add_argument("--source-clip", type=Path, default=None, metavar="PATH",
                        help="video with one frontal face per frame that the pipeline and live clips are built "
                             "from (default: the phone clip in the shared media folder beside the checkout)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="folder for the clips built with ffmpeg, reused by later runs "
                             "(default: ~/.cache/emotion-pipeline/bench)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="keep the recorded videos and events files in this folder (default: a temporary "
                             "folder, deleted at the end)")
    parser.set_defaults(handler=run_bench, stage="bench")


def parse_parts(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"expected parts from {', '.join(PARTS)}, got {text!r}")
    return parts


def parse_workers(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(count) for count in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 1,2,4, got {text!r}") from None
    if not counts or any(not 1 <= count <= 16 for count in counts):
        raise argparse.ArgumentTypeError(f"expected worker counts from 1 to 16, got {text!r}")
    return counts


def import_suite():
    """Import benchmarks.suite from the checkout, or return None where the checkout has no benchmarks folder."""
    if not (CHECKOUT_ROOT / "benchmarks" / "suite.py").is_file():
        return None
    if str(CHECKOUT_ROOT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT_ROOT))
    import benchmarks.suite

    return benchmarks.suite


def run_bench(args: argparse.Namespace) -> int:
    suite = import_suite()
    if suite is None:
        logger.error("No benchmarks folder found in %s: run `emotion-pipeline bench` from an editable install "
                     "of a source checkout (pip install -e .)", CHECKOUT_ROOT)
        return EXIT_INVALID_ARGUMENTS
    if args.json is not None and not args.json.parent.is_dir():
        logger.error("Cannot write %s: the folder %s does not exist. Create it or choose another path",
                     args.json, args.json.parent)
        return EXIT_INVALID_ARGUMENTS

    from benchmarks.clips import PHONE_CLIP, default_cache_dir
    from benchmarks.pipeline import PipelineRunError

    output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="emotion-bench-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    options = suite.SuiteOptions(
        parts=args.only,
        repeats=args.repeats or (1 if args.quick else 3),
        quick=args.quick,
        cache_dir=args.cache_dir or default_cache_dir(),
        output_dir=output_dir,
        fer_python=args.fer_python,
        workers=args.workers or (suite.QUICK_WORKERS if args.quick else suite.FULL_WORKERS),
        source_clip=args.source_clip or PHONE_CLIP,
    )
    logger.info("Running benchmark parts %s with %d repeats, outputs in %s", ",".join(options.parts),
                options.repeats, output_dir)
    try:
        report = suite.run_suite(options)
    except (PipelineRunError, OSError, RuntimeError) as error:
        logger.error("Benchmark failed: %s", error)
        return EXIT_BENCHMARK_FAILED
    finally:
        if args.output_dir is None:
            shutil.rmtree(output_dir, ignore_errors=True)

    print(suite.format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        logger.info("Wrote %s", args.json)
    return 0
