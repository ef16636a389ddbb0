"""EmotionClassifier on both backends, and the TFLite export against the Keras model it came from."""

import contextlib
import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest

from classifier.export import ExportError, check_export, compare_export
from classifier.inference import (
    EmotionClassifier,
    ModelError,
    backend_for_path,
    default_model_path,
)
from classifier.labels import NUM_CLASSES
from classifier.model import build_mini_xception
from classifier.preprocess import preprocess_faces, resize_face, to_grayscale, zoom_faces
from common.cli import main
from common.config import load_config

# Float32 TFLite differs from TensorFlow only by rounding: at most 1e-6 per probability
# on a partly trained mini-Xception.
PROBABILITY_TOLERANCE = 1e-5


def save_random_model(path, seed: int):
    """Save an untrained mini-Xception whose class scores are spread wide, so every face has a clear argmax."""
    keras.utils.set_random_seed(seed)
    model = build_mini_xception()
    class_conv = model.get_layer("class_conv")
    kernel, bias = class_conv.get_weights()
    class_conv.set_weights([kernel * 40.0, bias])
    model.save(path)
    return path


@dataclass(frozen=True)
class Models:
    keras_path: Path
    tflite_path: Path
    export_status: int
    export_output: str


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A .keras model and its .tflite export, written by `emotion-pipeline export`."""
    folder = tmp_path_factory.mktemp("models")
    keras_path = save_random_model(folder / "model.keras", seed=3)
    tflite_path = folder / "exported" / "shipped.tflite"

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            status = main([
                "--log-level", "WARNING", "export", "--model", str(keras_path), "--output", str(tflite_path),
            ])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return Models(keras_path, tflite_path, status, output.getvalue())


@pytest.fixture(scope="module")
def faces():
    """80 faces: noise, flat gray levels and gradients, which the model scores differently."""
    rng = np.random.default_rng(11)
    noise = rng.integers(0, 256, size=(60, 48, 48), dtype=np.uint8)
    flat = np.stack([np.full((48, 48), level, dtype=np.uint8) for level in range(0, 256, 26)])
    ramp = np.linspace(0, 255, 48).astype(np.uint8)
    gradients = np.stack([np.roll(np.tile(ramp, (48, 1)), shift, axis=1) for shift in range(0, 48, 5)])
    return np.concatenate([noise, flat, gradients])


@pytest.fixture(scope="module")
def keras_classifier(models):
    return EmotionClassifier(models.keras_path, backend="keras")


@pytest.fixture(scope="module")
def litert_classifier(models):
    return EmotionClassifier(models.tflite_path, backend="litert")


def test_predict_returns_probabilities(keras_classifier, litert_classifier, faces):
    for classifier in (keras_classifier, litert_classifier):
        probabilities = classifier.predict(faces[:9])

        assert probabilities.dtype == np.float32
        assert probabilities.shape == (9, NUM_CLASSES)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        assert (probabilities >= 0).all()


@pytest.mark.parametrize("backend", ["keras", "litert"])
def test_flip_average_means_both_views(models, faces, backend):
    path = models.keras_path if backend == "keras" else models.tflite_path
    plain = EmotionClassifier(path, backend=backend, flip_average=False, zoom_views=())
    averaged = EmotionClassifier(path, backend=backend, zoom_views=())

    expected = (plain.predict(faces) + plain.predict(faces[:, :, ::-1])) / 2

    np.testing.assert_allclose(averaged.predict(faces), expected, atol=PROBABILITY_TOLERANCE)
    # Noise faces are not mirror-symmetric, so averaging changes their probabilities.
    assert np.abs(plain.predict(faces) - expected).max() > 1e-3


def test_symmetric_faces_unchanged_by_flip(models, faces):
    plain = EmotionClassifier(models.keras_path, backend="keras", flip_average=False, zoom_views=())
    averaged = EmotionClassifier(models.keras_path, backend="keras", zoom_views=())
    left_halves = faces[:20, :, :24]
    symmetric = np.concatenate([left_halves, left_halves[:, :, ::-1]], axis=2)

    np.testing.assert_allclose(averaged.predict(symmetric), plain.predict(symmetric), atol=PROBABILITY_TOLERANCE)


def test_zoom_views_mean_of_four_inputs(models, faces):
    averaged = EmotionClassifier(models.keras_path, backend="keras", zoom_views=(1.1,))
    inputs = preprocess_faces(faces)
    zoomed = zoom_faces(inputs, 1.1)
    views = [inputs, zoomed, inputs[:, :, ::-1], zoomed[:, :, ::-1]]

    expected = np.mean([averaged.runner(view) for view in views], axis=0)

    np.testing.assert_allclose(averaged.predict(faces), expected, atol=PROBABILITY_TOLERANCE)
    assert averaged.views_per_face == 4
    assert averaged.describe_views() == "original, zoom 1.1, each also mirrored"


def test_default_views_match_live_classifier(models):
    classifier = EmotionClassifier(models.keras_path)

    assert classifier.zoom_views == tuple(load_config(None).classifier.zoom_views)
    assert classifier.flip_average is load_config(None).classifier.flip_average


@pytest.mark.parametrize("zoom_views", [(1.0,), (0.9,), (2.5,)])
def test_bad_zoom_views_rejected(models, zoom_views):
    with pytest.raises(ValueError, match="zoom views above 1"):
        EmotionClassifier(models.keras_path, backend="keras", zoom_views=zoom_views)


def test_faces_have_distinct_predictions(keras_classifier, faces):
    # Guards the comparisons below: a model that gave every face the same class would hide disagreements.
    predictions = keras_classifier.predict(faces).argmax(axis=1)

    assert len(set(predictions.tolist())) >= 3


@pytest.mark.parametrize("batch_size", [1, 3, 16, 80])
def test_export_matches_keras(keras_classifier, litert_classifier, faces, batch_size):
    for start in range(0, len(faces), batch_size):
        batch = faces[start:start + batch_size]
        expected = keras_classifier.predict(batch)
        actual = litert_classifier.predict(batch)

        np.testing.assert_array_equal(actual.argmax(axis=1), expected.argmax(axis=1))
        np.testing.assert_allclose(actual, expected, atol=PROBABILITY_TOLERANCE)


def test_litert_batch_size_changes(keras_classifier, litert_classifier, faces):
    """Resizing the interpreter back and forth must never return a previous batch's results."""
    expected = keras_classifier.predict(faces)
    start = 0
    for size in (5, 1, 12, 5, 30, 1, 26):
        actual = litert_classifier.predict(faces[start:start + size])

        np.testing.assert_allclose(actual, expected[start:start + size], atol=PROBABILITY_TOLERANCE)
        start += size


def test_keras_traces_once(keras_classifier, faces):
    for size in (1, 4, 33, 2):
        keras_classifier.predict(faces[:size])

    assert keras_classifier.runner.forward.experimental_get_tracing_count() == 1


def test_empty_batch(keras_classifier, litert_classifier):
    for classifier in (keras_classifier, litert_classifier):
        probabilities = classifier.predict(np.zeros((0, 48, 48), dtype=np.uint8))

        assert probabilities.shape == (0, NUM_CLASSES)
        assert probabilities.dtype == np.float32


def test_predict_prepares_colour_crops(keras_classifier, litert_classifier, faces):
    rng = np.random.default_rng(4)
    crops = [rng.integers(0, 256, size=(96 + 7 * index, 80, 3), dtype=np.uint8) for index in range(4)]
    prepared = np.stack([resize_face(to_grayscale(crop), 48) for crop in crops])

    for classifier in (keras_classifier, litert_classifier):
        np.testing.assert_allclose(classifier.predict(crops), classifier.predict(prepared), atol=1e-6)


def test_export_cli_writes_checked_model(models):
    assert models.export_status == 0
    assert "checked on 256 noise faces" in models.export_output
    # The file is written under another name and renamed only after the check passed.
    assert [path.name for path in models.tflite_path.parent.iterdir()] == ["shipped.tflite"]
    assert EmotionClassifier(models.tflite_path).backend == "litert"


def test_compare_export_rejects_other_model(models, faces, tmp_path):
    other_keras = save_random_model(tmp_path / "other.keras", seed=4)

    check = compare_export(other_keras, models.tflite_path, faces)

    assert check.faces == len(faces)
    assert check.argmax_disagreements > 0
    with pytest.raises(ExportError, match="differs from the Keras model"):
        check_export(check)


def test_default_model_paths():
    keras_path = default_model_path()
    tflite_path = default_model_path("litert")

    assert keras_path.name == "mini_xception.keras"
    assert tflite_path.name == "mini_xception.tflite"
    assert keras_path.parent == tflite_path.parent
    assert keras_path.parent.name == "models"
    assert keras_path.parent.parent.name == "classifier"


def test_backend_for_path():
    assert backend_for_path("model.tflite") == "litert"
    assert backend_for_path("model.TFLITE") == "litert"
    assert backend_for_path("model.keras") == "keras"


def test_unknown_backend_rejected(models):
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        EmotionClassifier(models.keras_path, backend="onnx")


def test_backend_mismatch_rejected(models):
    with pytest.raises(ModelError, match="pass the backend 'litert'") as raised:
        EmotionClassifier(models.tflite_path, backend="keras")
    assert str(models.tflite_path) in str(raised.value)

    with pytest.raises(ModelError, match="pass the backend 'keras'"):
        EmotionClassifier(models.keras_path, backend="litert")


@pytest.mark.parametrize("backend", ["keras", "litert"])
def test_missing_model_rejected(tmp_path, backend):
    missing = tmp_path / f"missing{'.keras' if backend == 'keras' else '.tflite'}"

    with pytest.raises(ModelError, match="not found") as raised:
        EmotionClassifier(missing, backend=backend)

    assert str(missing) in str(raised.value)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("text.keras", b"not a model", "is not a Keras model"),
        ("wrong.h5", b"not a model either", "is not a readable Keras model"),
        ("text.tflite", b"not a flatbuffer", "is not a readable TFLite model"),
    ],
)
def test_non_model_file_rejected(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(ModelError, match=expected) as raised:
        EmotionClassifier(path)

    assert str(path) in str(raised.value)


def test_keras_archive_without_model_rejected(tmp_path):
    path = tmp_path / "empty.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "no model here")

    with pytest.raises(ModelError, match="is not a readable Keras model") as raised:
        EmotionClassifier(path)

    assert str(path) in str(raised.value)


def test_colour_input_model_rejected(tmp_path):
    inputs = keras.Input(shape=(48, 48, 3))
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    path = tmp_path / "colour.keras"
    keras.Model(inputs, outputs).save(path)

    with pytest.raises(ModelError, match=r"expected a model input of shape \(N, S, S, 1\)") as raised:
        EmotionClassifier(path)

    assert str(path) in str(raised.value)


def test_zoom_faces_crops_the_border():
    inputs = np.full((3, 48, 48, 1), -1.0, dtype=np.float32)
    inputs[:, :2] = inputs[:, -2:] = inputs[:, :, :2] = inputs[:, :, -2:] = 1.0

    zoomed = zoom_faces(inputs, 1.1)

    assert zoomed.shape == inputs.shape
    assert zoomed.dtype == np.float32
    # 1.1 keeps the middle 44 of 48 pixels, so the 2-pixel border is gone.
    np.testing.assert_array_equal(zoomed, -1.0)


def test_zoom_faces_enlarges_the_centre():
    inputs = np.full((1, 48, 48, 1), -1.0, dtype=np.float32)
    inputs[0, 20:28, 20:28] = 1.0

    zoomed = zoom_faces(inputs, 2.0)

    bright = (zoomed > 0).sum()
    assert 14 * 14 <= bright <= 18 * 18


def test_zoom_faces_rejects_zoom_below_one():
    with pytest.raises(ValueError, match="zoom of at least 1"):
        zoom_faces(np.zeros((1, 48, 48, 1), dtype=np.float32), 0.9)
