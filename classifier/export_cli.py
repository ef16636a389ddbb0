"""The `emotion-pipeline export` subcommand."""

import argparse
import logging
from pathlib import Path

from classifier.export import DEFAULT_TOLERANCE, NOISE_FACES
from classifier.labels import SPLITS
from classifier.train_cli import positive_float

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="convert a .keras model to .tflite for the litert backend",
        description=(
            "Convert a .keras model to a float32 .tflite file, then run both on the same faces and fail "
            "when any probability differs by more than --tolerance or any face gets another most probable "
            f"emotion. The faces are one FER-2013 split with --data, else {NOISE_FACES} seeded noise faces."
        ),
    )
    parser.add_argument("--model", type=Path, default=None,
                        help="the .keras model to convert (default: the shipped mini_xception.keras)")
    parser.add_argument("--output", type=Path, default=None,
                        help="the .tflite file to write (default: the model path with the suffix .tflite)")
    parser.add_argument("--data", type=Path, default=None,
                        help="FER-2013 dataset whose faces check the export (default: noise faces)")
    parser.add_argument("--split", choices=SPLITS, default="PublicTest",
                        help="split of --data that checks the export (default: PublicTest)")
    parser.add_argument("--tolerance", type=positive_float, default=DEFAULT_TOLERANCE,
                        help="maximum difference in any probability between the two models (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="folder for decoded dataset arrays (default: ~/.cache/emotion-pipeline)")
    parser.set_defaults(handler=run_export, stage="export")


def run_export(args: argparse.Namespace) -> int:
    from classifier.data import DatasetError, load_fer2013
    from classifier.export import ExportError, check_export, compare_export, export_tflite
    from classifier.inference import ModelError, default_model_path

    model_path = args.model if args.model is not None else default_model_path("keras")
    try:
        faces, source = None, "noise faces"
        if args.data is not None:
            faces = load_fer2013(args.data, cache_dir=args.cache_dir)[args.split].images
            source = f"faces of {args.split} in {args.data}"
            if len(faces) == 0:
                raise DatasetError(f"the {args.split} split of {args.data} contains no faces to check the export on")

        # The export replaces the output file only after it passed the check.
        output = args.output if args.output is not None else model_path.with_suffix(".tflite")
        unchecked = output.with_name(output.stem + ".unchecked.tflite")
        try:
            export_tflite(model_path, unchecked)
            check = compare_export(model_path, unchecked, faces)
            print(
                f"{output}: checked on {check.faces} {source}, largest probability difference "
                f"{check.max_difference:.2e}, {check.argmax_disagreements} faces with another most probable emotion"
            )
            check_export(check, args.tolerance)
            unchecked.replace(output)
        finally:
            unchecked.unlink(missing_ok=True)
    except (ModelError, DatasetError, ExportError) as error:
        logger.error("%s", error)
        return 1
    logger.info("Wrote %s", output)
    return 0
