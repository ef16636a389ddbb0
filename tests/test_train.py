"""`emotion-pipeline train` on a tiny generated dataset: every artifact, then --resume."""

import csv
import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from common.cli import main

ARTIFACTS = (
    "model.keras", "best.keras", "last.keras", "state.json", "history.csv",
    "curves.png", "confusion_matrix.png", "per_class.json", "config.json",
)


@pytest.fixture
def restore_logging():
    """Put back the root logger's handlers, which the CLI replaces with its own."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def tiny_csv(tmp_path):
    """64 Training and 16 PublicTest faces in the original CSV layout, every emotion present."""
    rng = np.random.default_rng(7)
    path = tmp_path / "fer2013.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["emotion", "pixels", "Usage"])
        for split, count in (("Training", 64), ("PublicTest", 16), ("PrivateTest", 7)):
            for index in range(count):
                pixels = rng.integers(0, 256, size=48 * 48)
                writer.writerow([index % 7, " ".join(map(str, pixels)), split])
    return path


def read_history(run_dir):
    with (run_dir / "history.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def run_train(tiny_csv, run_dir, epochs, *extra):
    return main([
        "--log-level", "WARNING", "train", "--data", str(tiny_csv), "--run-dir", str(run_dir),
        "--cache-dir", str(run_dir.parent / "cache"), "--epochs", str(epochs), "--batch-size", "16",
        "--early-stopping", "0", "--no-augment", *extra,
    ])


@pytest.mark.slow
def test_train_then_resume(tiny_csv, tmp_path, restore_logging):
    run_dir = tmp_path / "run"

    assert run_train(tiny_csv, run_dir, 2) == 0

    for name in ARTIFACTS:
        assert (run_dir / name).is_file(), f"{name} missing after training"
    assert json.loads((run_dir / "state.json").read_text())["epoch"] == 2
    assert [row["epoch"] for row in read_history(run_dir)] == ["0", "1"]
    report = json.loads((run_dir / "per_class.json").read_text())
    assert report["split"] == "PublicTest"
    assert report["n"] == 16
    assert sum(values["support"] for values in report["per_class"].values()) == 16
    first_last = (run_dir / "last.keras").stat().st_mtime_ns

    assert run_train(tiny_csv, run_dir, 3, "--resume") == 0

    state = json.loads((run_dir / "state.json").read_text())
    assert state["epoch"] == 3
    history = read_history(run_dir)
    assert [row["epoch"] for row in history] == ["0", "1", "2"]
    # The learning rate keeps decaying from where the first run stopped: 1e-3 * 0.95**2.
    assert float(history[2]["learning_rate"]) == pytest.approx(1e-3 * 0.95**2, rel=1e-4)
    assert (run_dir / "last.keras").stat().st_mtime_ns > first_last
    assert not list(run_dir.glob("*.partial.keras"))


def test_train_rejects_existing_run_without_resume(tiny_csv, tmp_path, restore_logging, capfd):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.keras").write_bytes(b"a previous run's checkpoint")

    code = run_train(tiny_csv, run_dir, 1)

    assert code == 1
    assert "pass --resume" in capfd.readouterr().err
    assert (run_dir / "last.keras").read_bytes() == b"a previous run's checkpoint"


def test_train_missing_data_reported_without_traceback(tmp_path):
    run_dir = tmp_path / "run"

    result = subprocess.run(
        [sys.executable, "-m", "common.cli", "train", "--data", str(tmp_path / "nope"), "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 1
    assert f"FER-2013 not found at {tmp_path / 'nope'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


@pytest.mark.slow
def test_block_filters_set_width(tiny_csv, tmp_path, restore_logging):
    import keras

    run_dir = tmp_path / "narrow"

    assert run_train(tiny_csv, run_dir, 1, "--block-filters", "8,12,16") == 0

    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    widths = [model.get_layer(f"block{index}_add").output.shape[-1] for index in (1, 2, 3)]
    assert widths == [8, 12, 16]
    with pytest.raises(ValueError):
        model.get_layer("block4_add")
    assert json.loads((run_dir / "config.json").read_text())["block_filters"] == [8, 12, 16]


@pytest.mark.parametrize("value", ["16,0,64", "16,,64", "wide"])
def test_bad_block_filters_rejected(tiny_csv, tmp_path, value, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["train", "--data", str(tiny_csv), "--run-dir", str(tmp_path / "run"), "--block-filters", value])

    assert raised.value.code == 2
    assert "--block-filters" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_model_rejects_bad_widths():
    from classifier.model import build_mini_xception

    for widths in ((), (16, 0)):
        with pytest.raises(ValueError, match="positive block widths"):
            build_mini_xception(block_filters=widths)
