"""The `emotion-pipeline train` subcommand."""

import argparse
import logging
from pathlib import Path

from classifier.preprocess import DEFAULT_INPUT_SIZE
from common.arguments import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    positive_int_list,
    unit_float,
)

logger = logging.getLogger(__name__)

EXIT_TRAINING_FAILED = 1


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train mini-Xception on FER-2013",
        description=(
            "Train mini-Xception on the FER-2013 Training split, keeping the checkpoint with the best "
            "PublicTest accuracy. Writes the model, history.csv, curves.png, confusion_matrix.png and "
            "per_class.json to the run folder."
        ),
    )
    parser.add_argument("--data", type=Path, required=True,
                        help="fer2013.csv, or a folder holding it or train/<emotion>/ and test/<emotion>/")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/mini-xception"),
                        help="folder for checkpoints, logs, plots and the final model (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its last finished epoch")
    parser.add_argument("--epochs", type=positive_int, default=60, help="number of epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="faces per training step (default: %(default)s)")
    parser.add_argument("--learning-rate", type=positive_float, default=1e-3,
                        help="initial Adam learning rate (default: %(default)s)")
    parser.add_argument("--lr-decay", type=unit_float, default=0.95,
                        help="factor applied to the learning rate after every epoch (default: %(default)s)")
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="train without the random shifts, rotations, zoom and flips that are on by default")
    parser.add_argument("--l2", type=non_negative_float, default=0.01,
                        help="L2 weight decay of the plain convolutions (default: %(default)s)")
    parser.add_argument("--separable-l2", type=non_negative_float, default=0.0,
                        help="L2 weight decay of the separable convolutions' depthwise and pointwise kernels "
                             "(default: %(default)s)")
    parser.add_argument("--early-stopping", type=non_negative_int, default=15,
                        help="stop after this many epochs without a better PublicTest accuracy, 0 for never "
                             "(default: %(default)s)")
    # NOTE: the default lives in classifier.model; importing it here would load Keras for every subcommand.
    parser.add_argument("--block-filters", type=positive_int_list, default=None, metavar="N,N,...",
                        help="channels of each residual block, which set the width and depth of the network "
                             "(default: the original 16,32,64,128)")
    parser.add_argument("--input-size", type=positive_int, default=DEFAULT_INPUT_SIZE,
                        help="side of the square model input in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for weights, shuffling, augmentation and the --limit sample "
                             "(default: %(default)s)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="use a random sample of N faces from each split, stratified by emotion and drawn with --seed "
                             "(for quick trials; default: every face)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="folder for decoded dataset arrays (default: ~/.cache/emotion-pipeline)")
    parser.set_defaults(handler=run_train, stage="train")


def run_train(args: argparse.Namespace) -> int:
    from classifier.data import DatasetError
    from classifier.train import TrainConfig, train

    architecture = {"block_filters": args.block_filters} if args.block_filters else {}
    config = TrainConfig(
        data=args.data,
        run_dir=args.run_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_decay=args.lr_decay,
        augment=args.augment,
        l2=args.l2,
        separable_l2=args.separable_l2,
        early_stopping=args.early_stopping,
        input_size=args.input_size,
        seed=args.seed,
        limit=args.limit,
        resume=args.resume,
        cache_dir=args.cache_dir,
        **architecture,
    )
    try:
        train(config)
    except (DatasetError, FileExistsError) as error:
        logger.error("%s", error)
        return EXIT_TRAINING_FAILED
    return 0

