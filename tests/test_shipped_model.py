"""The shipped model and its TFLite export on real FER-2013 PrivateTest faces.

Set EMOTION_TEST_MODEL to the path of another .keras model to run these checks
on it in place of the shipped one. Its .tflite export must lie beside it.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from classifier.data import FerSplit, read_face_image
from classifier.inference import EmotionClassifier, default_model_path
from classifier.labels import EMOTIONS
from classifier.preprocess import DEFAULT_INPUT_SIZE

FER_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fer2013"
SAMPLE_SIZE = 400
# Always predicting the majority class, happy, scores 879 / 3589 = 0.245 on PrivateTest.
MIN_ACCURACY = 0.5
# The project's budget for a model that runs live on a CPU.
MAX_PARAMETERS = 100_000


def keras_model_path() -> Path:
    override = os.environ.get("EMOTION_TEST_MODEL")
    path = Path(override) if override else default_model_path("keras")
    assert path.is_file(), (
        f"model {path} not found: copy the trained model.keras there, then run "
        f"`emotion-pipeline export --model {path}` to write its .tflite export beside it"
    )
    return path


@pytest.fixture(scope="module")
def private_test() -> FerSplit:
    """A stratified sample of PrivateTest faces, decoded from the image folders without the dataset cache."""
    if not (FER_DIR / "test").is_dir():
        pytest.skip(f"FER-2013 image folders not found at {FER_DIR}: these checks need its test/<emotion>/ folders")
    files = [file for emotion in EMOTIONS for file in sorted((FER_DIR / "test" / emotion).glob("PrivateTest_*"))]
    images = np.stack([read_face_image(file) for file in files])
    labels = np.array([EMOTIONS.index(file.parent.name) for file in files], dtype=np.int64)
    names = np.array([str(file) for file in files])
    return FerSplit(images, labels, names).subset(SAMPLE_SIZE, seed=0)


@pytest.fixture(scope="module")
def keras_probabilities(private_test) -> np.ndarray:
    classifier = EmotionClassifier(keras_model_path(), backend="keras")
    assert classifier.input_size == DEFAULT_INPUT_SIZE, "the detector sends 48x48 crops"
    return classifier.predict(private_test.images)


def test_shipped_model_beats_chance(private_test, keras_probabilities):
    predictions = keras_probabilities.argmax(axis=1)
    accuracy = float((predictions == private_test.labels).mean())

    assert len(private_test) == SAMPLE_SIZE
    assert accuracy > MIN_ACCURACY, f"accuracy {accuracy:.3f} on {SAMPLE_SIZE} PrivateTest faces"


def test_shipped_model_predicts_several_emotions(keras_probabilities):
    predicted = set(keras_probabilities.argmax(axis=1).tolist())

    assert len(predicted) >= 5, f"predicts only {sorted(EMOTIONS[index] for index in predicted)}"


def test_shipped_export_matches_keras(private_test, keras_probabilities):
    tflite_path = keras_model_path().with_suffix(".tflite")
    assert tflite_path.is_file(), (
        f"TFLite export {tflite_path} not found: run `emotion-pipeline export --model {keras_model_path()}`"
    )
    classifier = EmotionClassifier(tflite_path, backend="litert")

    probabilities = classifier.predict(private_test.images)

    np.testing.assert_array_equal(probabilities.argmax(axis=1), keras_probabilities.argmax(axis=1))
    np.testing.assert_allclose(probabilities, keras_probabilities, atol=1e-4)


def test_shipped_model_within_parameter_budget():
    classifier = EmotionClassifier(keras_model_path(), backend="keras")

    assert classifier.param_count <= MAX_PARAMETERS, f"{classifier.param_count:,} parameters"
