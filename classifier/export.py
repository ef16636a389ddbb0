"""Convert a `.keras` model to a float32 `.tflite` file for the litert backend, and check it.

With TensorFlow 2.21 and Keras 3 the conversion goes through a SavedModel:
`keras.Model.export(format="tf_saved_model")` writes it into a temporary folder
and `tf.lite.TFLiteConverter.from_saved_model` converts it. The batch dimension
stays free, so `classifier.inference` can resize the interpreter's input to any
batch size. The converter runs without optimisations, so weights stay float32
and nothing is quantised.
"""

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.inference import EmotionClassifier, load_keras_model

logger = logging.getLogger(__name__)

# The maximum difference in any probability between the Keras model and its
# export that a check accepts. Float32 conversion changes only the rounding: on
# the 3589 PublicTest faces, a partly trained mini-Xception (accuracy 0.49)
# differed by at most 1.0e-6.
DEFAULT_TOLERANCE = 1e-4

NOISE_FACES = 256


class ExportError(RuntimeError):
    """The exported model disagrees with the Keras model it was converted from."""


@dataclass(frozen=True)
class ExportCheck:
    """Agreement between a `.tflite` export and its Keras model on a set of faces."""

    faces: int
    max_difference: float  # largest absolute difference in any probability
    argmax_disagreements: int  # faces whose most probable emotion differs


def export_tflite(keras_path: str | Path, tflite_path: str | Path | None = None) -> Path:
    """Convert a `.keras` model to float32 TFLite and return the path written.

    `tflite_path` defaults to the Keras path with the suffix `.tflite`. The file
    is written under a temporary name and then renamed, so a failed conversion
    never leaves a truncated model behind.
    """
    import tensorflow as tf

    keras_path = Path(keras_path)
    tflite_path = Path(tflite_path) if tflite_path is not None else keras_path.with_suffix(".tflite")
    started = time.monotonic()
    model = load_keras_model(keras_path)

    with tempfile.TemporaryDirectory(prefix="emotion-export-") as folder:
        saved_model = Path(folder) / "saved_model"
        model.export(str(saved_model), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        flatbuffer = converter.convert()

    tflite_path.parent.mkdir(parents=True, exist_ok=True)
    partial = tflite_path.with_name(tflite_path.name + ".partial")
    partial.write_bytes(flatbuffer)
    partial.replace(tflite_path)
    logger.info(
        "Exported %s to %s (%d bytes) in %.1f s",
        keras_path, tflite_path, len(flatbuffer), time.monotonic() - started,
    )
    return tflite_path


def compare_export(
    keras_path: str | Path,
    tflite_path: str | Path,
    faces: np.ndarray | None = None,
    batch_size: int = 64,
) -> ExportCheck:
    """Run both models on the same uint8 faces, `batch_size` at a time, and compare their probabilities.

    Without `faces`, the check runs on NOISE_FACES seeded noise faces of the
    model's input size.
    """
    if batch_size < 1:
        raise ValueError(f"expected a batch size of at least 1, got {batch_size}")
    # Both models are compared face by face, without averaging in other views of the faces.
    keras_classifier = EmotionClassifier(keras_path, backend="keras", flip_average=False, zoom_views=())
    litert_classifier = EmotionClassifier(tflite_path, backend="litert", flip_average=False, zoom_views=())
    if faces is None:
        faces = random_faces(NOISE_FACES, keras_classifier.input_size)
    if len(faces) == 0:
        raise ValueError("expected at least one face to compare the export on, got none")

    max_difference = 0.0
    disagreements = 0
    for start in range(0, len(faces), batch_size):
        batch = faces[start:start + batch_size]
        expected = keras_classifier.predict(batch)
        actual = litert_classifier.predict(batch)
        max_difference = max(max_difference, float(np.abs(expected - actual).max()))
        disagreements += int((expected.argmax(axis=1) != actual.argmax(axis=1)).sum())
    return ExportCheck(len(faces), max_difference, disagreements)


def check_export(check: ExportCheck, tolerance: float = DEFAULT_TOLERANCE) -> None:
    """Raise ExportError if the export's probabilities stray beyond `tolerance` or any argmax differs."""
    if check.max_difference > tolerance or check.argmax_disagreements > 0:
        raise ExportError(
            f"the TFLite export differs from the Keras model on {check.faces} faces: largest probability "
            f"difference {check.max_difference:.2e} (allowed {tolerance:.0e}), "
            f"{check.argmax_disagreements} faces with another most probable emotion. "
            "Convert again with a float32 converter and no quantisation."
        )


def random_faces(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Return `count` seeded uint8 noise faces, for checking an export when no dataset is at hand."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size), dtype=np.uint8)
