"""The `emotion-pipeline evaluate` subcommand."""

import argparse
import json
import logging
from pathlib import Path

from classifier.labels import SPLITS
from common.arguments import parse_number, positive_int
from common.config import DEFAULT_ZOOM_VIEWS

logger = logging.getLogger(__name__)


def zoom_view_list(text: str) -> tuple[float, ...]:
    """Parse comma-separated zoom factors above 1 and at most 2, or "none"."""
    if text.strip().lower() == "none":
        return ()
    from classifier.inference import check_zoom_views

    zooms = tuple(parse_number(part.strip(), float) for part in text.split(","))
    try:
        check_zoom_views(zooms)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected zoom factors above 1 and at most 2, or none, got {text}") from None
    return zooms


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a trained model on a FER-2013 split",
        description=(
            "Print the accuracy, per-class precision, recall and F1, and the confusion matrix of a model on "
            "one FER-2013 split, and the accuracy without the faces that are exact pixel copies of Training "
            "faces. Exits with status 1 when the model or the dataset cannot be read."
        ),
    )
    parser.add_argument("--data", type=Path, required=True,
                        help="fer2013.csv, or a folder holding it or train/<emotion>/ and test/<emotion>/")
    parser.add_argument("--split", choices=SPLITS, required=True,
                        help="split to measure: PublicTest for choosing models, PrivateTest for the final figure")
    parser.add_argument("--model", type=Path, default=None,
                        help="a .keras model or its .tflite export (default: the shipped mini_xception.keras)")
    parser.add_argument("--json", action="store_true",
                        help="also print the results as one JSON object on the last line of stdout")
    parser.add_argument("--no-flip-average", dest="flip_average", action="store_false",
                        help="leave out the mirror image of each view, which the live classifier averages in "
                             "by default")
    parser.add_argument("--zoom-views", type=zoom_view_list, default=DEFAULT_ZOOM_VIEWS, metavar="Z,Z,...|none",
                        help="zoom factors of extra views of each face, its centre enlarged, averaged in as the "
                             "live classifier does (default: %s, the classifier.zoom_views default)"
                             % (",".join(f"{zoom:g}" for zoom in DEFAULT_ZOOM_VIEWS) or "none"))
    parser.add_argument("--batch-size", type=positive_int, default=256, help="faces per model call (default: 256)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="folder for decoded dataset arrays (default: ~/.cache/emotion-pipeline)")
    parser.set_defaults(handler=run_evaluate, stage="evaluate")


def run_evaluate(args: argparse.Namespace) -> int:
    from classifier.data import DatasetError, load_fer2013
    from classifier.evaluate import evaluate, format_evaluation
    from classifier.inference import EmotionClassifier, ModelError

    try:
        classifier = EmotionClassifier(args.model, flip_average=args.flip_average, zoom_views=args.zoom_views)
        splits = load_fer2013(args.data, cache_dir=args.cache_dir)
    except (ModelError, DatasetError) as error:
        logger.error("%s", error)
        return 1

    if len(splits[args.split]) == 0:
        logger.error("The %s split of %s contains no faces: pass a dataset that has some", args.split, args.data)
        return 1
    training = None if args.split == "Training" else splits["Training"]
    result = evaluate(classifier, splits[args.split], args.split, training, args.batch_size)

    print(format_evaluation(result))
    if args.json:
        print(json.dumps(result))
    return 0
