"""Train mini-Xception on FER-2013: data, model, fit with checkpoints, report.

A run folder holds everything one training run produces:

    history.csv        per-epoch loss, accuracy and learning rate
    last.keras         model and optimizer after the latest epoch (for --resume)
    state.json         the latest finished epoch and the best PublicTest accuracy
    best.keras         the model with the best PublicTest accuracy so far
    model.keras        the final model (best.keras, saved without optimizer state)
    curves.png, confusion_matrix.png, per_class.json   the PublicTest report
"""

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from classifier.augment import make_augmentation
from classifier.data import FerSplit, load_fer2013
from classifier.model import BLOCK_FILTERS, build_mini_xception
from classifier.preprocess import DEFAULT_INPUT_SIZE, preprocess_faces
from classifier.report import write_report

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and paths of one training run."""

    data: Path
    run_dir: Path
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_decay: float = 0.95  # multiplies the learning rate once per epoch
    augment: bool = True
    l2: float = 0.01
    separable_l2: float = 0.0
    early_stopping: int = 15  # epochs without a better PublicTest accuracy; 0 disables
    block_filters: tuple[int, ...] = BLOCK_FILTERS  # channels per residual block
    input_size: int = DEFAULT_INPUT_SIZE
    seed: int = 1
    limit: int | None = None  # faces sampled per split, stratified by emotion; for quick trials and tests
    resume: bool = False
    cache_dir: Path | None = None


def train(config: TrainConfig) -> Path:
    """Run training as configured and return the path of the final model."""
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)

    # The data is read first, so a wrong --data path leaves no empty run folder behind.
    train_split, val_split = load_splits(config)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    train_data = make_dataset(train_split, config, training=True)
    val_data = make_dataset(val_split, config, training=False)

    model, initial_epoch, best_accuracy = build_or_resume(config)
    if initial_epoch >= config.epochs:
        logger.info("Run %s already finished %d of %d epochs", config.run_dir, initial_epoch, config.epochs)
    else:
        logger.info(
            "Training %s (%d parameters) on %d faces, validating on %d, epochs %d to %d",
            model.name, model.count_params(), len(train_split), len(val_split),
            initial_epoch + 1, config.epochs,
        )
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            callbacks=make_callbacks(config, best_accuracy),
            shuffle=False,  # make_dataset already shuffles the training data
            verbose=1 if sys.stdout.isatty() else 2,
        )

    best = keras.models.load_model(config.run_dir / "best.keras")
    final_path = config.run_dir / "model.keras"
    best.save(final_path, include_optimizer=False)

    probabilities = best.predict(val_data, verbose=0)
    write_report(config.run_dir, config.run_dir / "history.csv", val_split.labels, probabilities, "PublicTest")
    logger.info("Training finished in %.0f s; model saved to %s", time.monotonic() - started, final_path)
    return final_path


def load_splits(config: TrainConfig) -> tuple[FerSplit, FerSplit]:
    splits = load_fer2013(config.data, cache_dir=config.cache_dir)
    train_split, val_split = splits["Training"], splits["PublicTest"]
    if config.limit is not None:
        train_split = train_split.subset(config.limit, seed=config.seed)
        val_split = val_split.subset(config.limit, seed=config.seed)
    if len(train_split) == 0 or len(val_split) == 0:
        raise ValueError(f"{config.data}: the Training and PublicTest splits must both hold faces")
    return train_split, val_split


def make_dataset(split: FerSplit, config: TrainConfig, training: bool) -> tf.data.Dataset:
    """Batch a split as model input; training data is shuffled and augmented."""
    faces = preprocess_faces(split.images, config.input_size)
    labels = keras.utils.to_categorical(split.labels, num_classes=7)
    dataset = tf.data.Dataset.from_tensor_slices((faces, labels))

    if training:
        dataset = dataset.shuffle(len(faces), seed=config.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(config.batch_size)
    if training and config.augment:
        augment = make_augmentation(config.seed)
        dataset = dataset.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def build_or_resume(config: TrainConfig) -> tuple[keras.Model, int, float]:
    """Return the model, the number of finished epochs and the best PublicTest accuracy."""
    last_path = config.run_dir / "last.keras"
    state_path = config.run_dir / "state.json"

    if config.resume and last_path.is_file() and state_path.is_file():
        state = json.loads(state_path.read_text())
        logger.info(
            "Resuming %s after epoch %d (best PublicTest accuracy %.4f)",
            config.run_dir, state["epoch"], state["best_accuracy"],
        )
        return keras.models.load_model(last_path), state["epoch"], state["best_accuracy"]

    if config.resume:
        logger.warning("No checkpoint in %s to resume from; starting a new run", config.run_dir)
    elif last_path.exists():
        raise FileExistsError(
            f"{config.run_dir} already contains a run: pass --resume to continue it or choose another --run-dir"
        )

    model = build_mini_xception(
        config.input_size, l2=config.l2, separable_l2=config.separable_l2, block_filters=config.block_filters
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    (config.run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2, default=str) + "\n")
    return model, 0, 0.0


def make_callbacks(config: TrainConfig, best_accuracy: float) -> list[keras.callbacks.Callback]:
    callbacks = [
        keras.callbacks.LearningRateScheduler(
            lambda epoch: config.learning_rate * config.lr_decay**epoch
        ),
        keras.callbacks.CSVLogger(str(config.run_dir / "history.csv"), append=config.resume),
        Checkpoints(config.run_dir, best_accuracy),
    ]
    if config.early_stopping > 0:
        # NOTE: the patience counter restarts after --resume; the best accuracy does not.
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=config.early_stopping, verbose=1
            )
        )
    return callbacks


class Checkpoints(keras.callbacks.Callback):
    """Save the latest and the best model after every epoch, with the state to resume."""

    def __init__(self, run_dir: Path, best_accuracy: float):
        super().__init__()
        self.run_dir = run_dir
        self.best_accuracy = best_accuracy

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        accuracy = float((logs or {}).get("val_accuracy", 0.0))
        best_path = self.run_dir / "best.keras"
        # A run whose accuracy never rises above 0 still needs a best.keras for the final model.
        if accuracy > self.best_accuracy or not best_path.is_file():
            logger.info("Epoch %d: PublicTest accuracy improved from %.4f to %.4f", epoch + 1, self.best_accuracy, accuracy)
            self.best_accuracy = accuracy
            save_atomically(self.model, best_path)

        save_atomically(self.model, self.run_dir / "last.keras")
        state = {"epoch": epoch + 1, "best_accuracy": self.best_accuracy}
        (self.run_dir / "state.json").write_text(json.dumps(state) + "\n")


def save_atomically(model: keras.Model, path: Path) -> None:
    """Save to a temporary file, then rename, so a kill never leaves a half-written model."""
    partial = path.with_name(path.stem + ".partial.keras")
    model.save(partial)
    partial.replace(path)
