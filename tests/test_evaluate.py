"""`emotion-pipeline evaluate` on a generated dataset with Training faces planted in the test splits."""

import contextlib
import csv
import io
import json
import logging

import keras
import numpy as np
import pytest

from classifier.inference import EmotionClassifier
from classifier.labels import EMOTIONS
from classifier.model import build_mini_xception
from common.cli import main
from common.config import load_config

JSON_KEYS = {
    "accuracy", "params", "split", "n", "per_class", "accuracy_dedup", "n_dedup", "duplicates_excluded",
    "confusion_matrix", "model", "flip_average", "zoom_views",
}


def noise_faces(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 48, 48), dtype=np.uint8)


def with_copies(faces: np.ndarray, training: np.ndarray, copied: list[int], positions: list[int]) -> np.ndarray:
    faces = faces.copy()
    for source, target in zip(copied, positions):
        faces[target] = training[source]
    return faces


class Dataset:
    """Training, PublicTest and PrivateTest faces with labels; some test faces are exact Training copies."""

    def __init__(self):
        self.faces = {"Training": noise_faces(40, seed=1)}
        training = self.faces["Training"]
        self.copies = {"PublicTest": [2, 5, 11], "PrivateTest": [7]}
        self.faces["PublicTest"] = with_copies(noise_faces(24, seed=2), training, [0, 3, 3], self.copies["PublicTest"])
        private = with_copies(noise_faces(10, seed=3), training, [39], self.copies["PrivateTest"])
        # A face one pixel away from a Training face is not a copy.
        private[8] = training[20]
        private[8, 10, 10] ^= 1
        self.faces["PrivateTest"] = private
        rng = np.random.default_rng(4)
        self.labels = {split: rng.integers(0, len(EMOTIONS), size=len(faces)) for split, faces in self.faces.items()}

    def write_csv(self, path):
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["emotion", "pixels", "Usage"])
            for split, faces in self.faces.items():
                for face, label in zip(faces, self.labels[split]):
                    writer.writerow([int(label), " ".join(map(str, face.ravel())), split])
        return path


@pytest.fixture(scope="module")
def dataset():
    return Dataset()


@pytest.fixture(scope="module")
def dataset_csv(dataset, tmp_path_factory):
    return dataset.write_csv(tmp_path_factory.mktemp("data") / "fer2013.csv")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    keras.utils.set_random_seed(5)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    build_mini_xception().save(path)
    return path


@pytest.fixture(scope="module")
def predictions(model_path, dataset):
    """The predicted class of every face, computed apart from the evaluate code."""
    classifier = EmotionClassifier(model_path)
    return {split: classifier.predict(faces).argmax(axis=1) for split, faces in dataset.faces.items()}


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """Run `emotion-pipeline` in this process; return its exit status, stdout and stderr."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(args)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run_evaluate(dataset_csv, model_path, tmp_path_factory):
    """Run the evaluate subcommand on the generated dataset, once for each distinct set of arguments."""
    cache_dir = tmp_path_factory.mktemp("cache")
    results = {}

    def run(*args, model=model_path):
        key = (args, str(model))
        if key not in results:
            results[key] = run_cli([
                "evaluate", "--data", str(dataset_csv), "--cache-dir", str(cache_dir), "--model", str(model), *args,
            ])
        return results[key]

    return run


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_json_has_all_figures(run_evaluate, dataset, predictions):
    status, out, err = run_evaluate("--split", "PublicTest", "--json")

    assert status == 0
    result = last_json(out)
    assert JSON_KEYS <= set(result)
    assert result["split"] == "PublicTest"
    assert result["n"] == 24
    assert result["params"] == build_mini_xception().count_params()
    expected_accuracy = float((predictions["PublicTest"] == dataset.labels["PublicTest"]).mean())
    assert result["accuracy"] == pytest.approx(expected_accuracy, abs=1e-4)
    assert set(result["per_class"]) == set(EMOTIONS)
    assert sum(values["support"] for values in result["per_class"].values()) == 24
    assert np.array(result["confusion_matrix"]).sum() == 24
    assert "Predicting" in err


def test_single_view_flags(run_evaluate, dataset, model_path):
    status, out, _ = run_evaluate("--split", "PublicTest", "--json", "--no-flip-average", "--zoom-views", "none")

    assert status == 0
    result = last_json(out)
    assert result["flip_average"] is False
    assert result["zoom_views"] == []
    classifier = EmotionClassifier(model_path, flip_average=False, zoom_views=())
    plain = classifier.predict(dataset.faces["PublicTest"]).argmax(axis=1)
    assert result["accuracy"] == pytest.approx(float((plain == dataset.labels["PublicTest"]).mean()), abs=1e-4)
    assert "views     original\n" in out


def test_default_views_are_the_live_ones(run_evaluate):
    result = last_json(run_evaluate("--split", "PublicTest", "--json")[1])

    live = load_config(None).classifier
    assert result["flip_average"] is live.flip_average
    assert result["zoom_views"] == live.zoom_views


def test_zoom_views_flag(run_evaluate, dataset, model_path):
    result = last_json(run_evaluate("--split", "PublicTest", "--json", "--zoom-views", "1.05,1.2")[1])

    assert result["zoom_views"] == [1.05, 1.2]
    classifier = EmotionClassifier(model_path, zoom_views=(1.05, 1.2))
    predicted = classifier.predict(dataset.faces["PublicTest"]).argmax(axis=1)
    assert result["accuracy"] == pytest.approx(float((predicted == dataset.labels["PublicTest"]).mean()), abs=1e-4)


def test_dedup_excludes_planted_copies(run_evaluate, dataset, predictions):
    for split in ("PublicTest", "PrivateTest"):
        status, out, _ = run_evaluate("--split", split, "--json")

        assert status == 0
        result = last_json(out)
        copies = len(dataset.copies[split])
        assert result["duplicates_excluded"] == copies
        assert result["n_dedup"] == len(dataset.faces[split]) - copies
        originals = np.ones(len(dataset.faces[split]), dtype=bool)
        originals[dataset.copies[split]] = False
        expected = float((predictions[split][originals] == dataset.labels[split][originals]).mean())
        assert result["accuracy_dedup"] == pytest.approx(expected, abs=1e-4)


def test_training_split_has_no_dedup(run_evaluate, dataset):
    status, out, _ = run_evaluate("--split", "Training", "--json")

    assert status == 0
    result = last_json(out)
    assert result["n"] == len(dataset.faces["Training"])
    assert result["duplicates_excluded"] is None
    assert result["n_dedup"] is None
    assert result["accuracy_dedup"] is None
    assert "not applicable" in out


def test_text_report_without_json(run_evaluate):
    status, out, _ = run_evaluate("--split", "PrivateTest")

    assert status == 0
    assert "accuracy" in out
    assert "without exact copies of Training faces (1 excluded, 9 left)" in out
    assert "true \\ predicted" in out
    for emotion in EMOTIONS:
        assert emotion in out
    with pytest.raises(json.JSONDecodeError):
        last_json(out)


def test_batch_size_does_not_change_results(run_evaluate):
    _, whole, _ = run_evaluate("--split", "PublicTest", "--json")
    _, batched, _ = run_evaluate("--split", "PublicTest", "--json", "--batch-size", "5")

    assert last_json(batched) == last_json(whole)


def test_missing_model_named(run_evaluate, tmp_path):
    missing = tmp_path / "no-model.keras"

    status, out, err = run_evaluate("--split", "PublicTest", model=missing)

    assert status == 1
    assert out == ""
    assert f"model file {missing} not found" in err


def test_non_model_file_named(run_evaluate, tmp_path):
    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("these are notes, not a model")

    status, out, err = run_evaluate("--split", "PublicTest", model=not_a_model)

    assert status == 1
    assert out == ""
    assert f"{not_a_model} is not a Keras model" in err


def test_missing_dataset_named(model_path, tmp_path):
    missing = tmp_path / "no-dataset"

    status, out, err = run_cli(["evaluate", "--data", str(missing), "--split", "PublicTest", "--model", str(model_path)])

    assert status == 1
    assert out == ""
    assert f"FER-2013 not found at {missing}" in err
