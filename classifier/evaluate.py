"""Measure a trained model on one FER-2013 split, with and without the faces copied from Training.

About 8% of PublicTest and of PrivateTest are exact pixel copies of Training
faces, so the plain accuracy partly measures memorisation. `evaluate` reports
the accuracy on the whole split and on the split without those copies.
"""

import logging
import time

import numpy as np
from tqdm import tqdm

from classifier.data import FerSplit, duplicate_mask
from classifier.inference import EmotionClassifier, describe_views
from classifier.labels import NUM_CLASSES
from classifier.report import format_confusion_matrix, format_per_class, summarise

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256


def predict_split(classifier: EmotionClassifier, split: FerSplit, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Return the probabilities of every face of `split`, predicted `batch_size` faces at a time."""
    if batch_size < 1:
        raise ValueError(f"expected a batch size of at least 1, got {batch_size}")
    batches = [
        classifier.predict(split.images[start:start + batch_size])
        for start in tqdm(range(0, len(split), batch_size), desc="Predicting", unit=" batches")
    ]
    if not batches:
        return np.zeros((0, NUM_CLASSES), dtype=np.float32)
    return np.concatenate(batches)


def evaluate(
    classifier: EmotionClassifier,
    split: FerSplit,
    split_name: str,
    training: FerSplit | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict:
    """Return the accuracy, per-class metrics and confusion matrix of `classifier` on `split`.

    `accuracy_dedup` and `n_dedup` leave out the faces whose pixels exactly
    equal a face of `training`, and `duplicates_excluded` counts them. All three
    are None when `training` is None, as for the Training split itself.
    """
    if len(split) == 0:
        raise ValueError(f"cannot evaluate on {split_name}: it contains no faces")

    started = time.monotonic()
    predictions = predict_split(classifier, split, batch_size).argmax(axis=1)
    result = {
        "model": str(classifier.model_path),
        "params": classifier.param_count,
        "flip_average": classifier.flip_average,
        "zoom_views": list(classifier.zoom_views),
    }
    result.update(summarise(split.labels, predictions, split_name))

    result.update(accuracy_dedup=None, n_dedup=None, duplicates_excluded=None)
    if training is not None:
        copies = duplicate_mask(split, training)
        originals = ~copies
        result["duplicates_excluded"] = int(copies.sum())
        result["n_dedup"] = int(originals.sum())
        if originals.any():
            result["accuracy_dedup"] = round(float((predictions[originals] == split.labels[originals]).mean()), 4)

    logger.info(
        "Evaluated %s on %d faces of %s in %.1f s (views: %s): accuracy %.4f",
        classifier.model_path, len(split), split_name, time.monotonic() - started,
        classifier.describe_views(), result["accuracy"],
    )
    return result


def format_evaluation(result: dict) -> str:
    """Return a readable report of an `evaluate` result."""
    params = "parameter count not available" if result["params"] is None else f"{result['params']:,} parameters"
    lines = [
        f"model     {result['model']} ({params})",
        f"split     {result['split']}, {result['n']} faces",
        f"views     {describe_views(result['zoom_views'], result['flip_average'])}",
        f"accuracy  {result['accuracy']:.4f}",
    ]
    if result["duplicates_excluded"] is None:
        lines.append("without Training copies: not applicable")
    elif result["accuracy_dedup"] is None:
        lines.append(f"without Training copies: every one of the {result['n']} faces is a copy")
    else:
        lines.append(
            f"accuracy  {result['accuracy_dedup']:.4f} without exact copies of Training faces "
            f"({result['duplicates_excluded']} excluded, {result['n_dedup']} left)"
        )
    lines += ["", format_per_class(result["per_class"]), "", format_confusion_matrix(np.array(result["confusion_matrix"]))]
    return "\n".join(lines)
