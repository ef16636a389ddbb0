"""Batched emotion inference for the live classifier stage and for evaluation.

`EmotionClassifier` turns a batch of face crops into probabilities per emotion
with one of two backends:

- `keras` calls the `.keras` model through one traced `tf.function` whose input
  signature leaves the batch dimension free, so a new batch size never retraces.
- `litert` runs the `.tflite` export (see `classifier.export`) in the
  ai-edge-litert interpreter and loads no TensorFlow. The interpreter's input is
  resized whenever the batch size changes.

Resizing beat padding to fixed batch sizes. One measurement ran 900 batches of
1 to 32 faces, of random size, through each method in turn. The mean per batch
was 11.9 ms with resizing, 16.7 ms when padded to the next power of two with one
interpreter per size, and 55 ms with the keras backend. The machine had 2 CPU
cores, shared with a training run (load average about 5), so these figures are
rough estimates.
"""

import logging
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from classifier.labels import NUM_CLASSES
from classifier.preprocess import preprocess_faces, zoom_faces
from common.config import DEFAULT_ZOOM_VIEWS

logger = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
MODEL_STEM = "mini_xception"

# Backend name -> suffix of the model file it runs.
BACKEND_SUFFIXES = {"keras": ".keras", "litert": ".tflite"}


class ModelError(ValueError):
    """The model file is missing, is not a model or does not fit the classifier."""


def default_model_path(backend: str = "keras") -> Path:
    """Return the path of the shipped model for `backend`, inside the installed package."""
    check_backend(backend)
    return MODELS_DIR / f"{MODEL_STEM}{BACKEND_SUFFIXES[backend]}"


def backend_for_path(path: str | Path) -> str:
    """Return the backend that runs a model file: `litert` for .tflite, `keras` otherwise."""
    return "litert" if Path(path).suffix.lower() == ".tflite" else "keras"


def check_backend(backend: str) -> None:
    if backend not in BACKEND_SUFFIXES:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKEND_SUFFIXES)}")


def check_model_file(path: Path) -> None:
    if not path.is_file():
        raise ModelError(
            f"model file {path} not found: pass a .keras model saved by `emotion-pipeline train` "
            "or its .tflite export from `emotion-pipeline export`"
        )


def load_keras_model(path: str | Path):
    """Load a `.keras` model, raising ModelError that names the path if that fails."""
    import keras

    path = Path(path)
    check_model_file(path)
    # Keras reports a .keras file that is no zip archive as "File not found", which misleads.
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(
            f"{path} is not a Keras model: a .keras file is a zip archive and this one is not. "
            "Pass a .keras file saved by `emotion-pipeline train`, such as model.keras or best.keras of a run folder"
        )
    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise ModelError(
            f"{path} is not a readable Keras model ({type(error).__name__}: {error}): pass a .keras file "
            "saved by `emotion-pipeline train`, such as model.keras or best.keras of a run folder"
        ) from error
    check_model_shapes(path, tuple(model.inputs[0].shape), tuple(model.outputs[0].shape))
    return model


def check_model_shapes(path: Path, input_shape: tuple, output_shape: tuple) -> int:
    """Return the face size of a model that maps (N, S, S, 1) faces to (N, 7) probabilities."""
    if len(input_shape) != 4 or input_shape[1] != input_shape[2] or input_shape[3] != 1:
        raise ModelError(f"{path}: expected a model input of shape (N, S, S, 1) for gray faces, got {input_shape}")
    if len(output_shape) != 2 or output_shape[1] != NUM_CLASSES:
        raise ModelError(
            f"{path}: expected a model output of shape (N, {NUM_CLASSES}), one probability per emotion, "
            f"got {output_shape}"
        )
    return int(input_shape[1])


class KerasRunner:
    """Run a Keras model through one traced `tf.function` with a free batch dimension."""

    def __init__(self, path: Path):
        import tensorflow as tf

        self.model = load_keras_model(path)
        self.input_size = int(self.model.inputs[0].shape[1])
        signature = [tf.TensorSpec((None, self.input_size, self.input_size, 1), tf.float32)]
        self.forward = tf.function(lambda faces: self.model(faces, training=False), input_signature=signature)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.forward(inputs).numpy()


class LiteRtRunner:
    """Run a `.tflite` model in the ai-edge-litert interpreter, resizing its input per batch size."""

    def __init__(self, path: Path, num_threads: int | None):
        from ai_edge_litert.interpreter import Interpreter

        check_model_file(path)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        except ValueError as error:
            raise ModelError(
                f"{path} is not a readable TFLite model ({error}): pass a .tflite file written by "
                "`emotion-pipeline export`"
            ) from error

        input_details = self.interpreter.get_input_details()[0]
        output_details = self.interpreter.get_output_details()[0]
        self.input_index = input_details["index"]
        self.output_index = output_details["index"]
        self.input_size = check_model_shapes(
            path, tuple(input_details["shape_signature"]), tuple(output_details["shape_signature"])
        )
        self.batch_size = 0  # the batch size the interpreter's tensors are allocated for

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        if len(inputs) != self.batch_size:
            self.interpreter.resize_tensor_input(self.input_index, inputs.shape, strict=True)
            self.interpreter.allocate_tensors()
            self.batch_size = len(inputs)
        self.interpreter.set_tensor(self.input_index, inputs)
        self.interpreter.invoke()
        # get_tensor returns a copy, so the next invoke cannot overwrite the result.
        return self.interpreter.get_tensor(self.output_index)


def check_zoom_views(zoom_views: Sequence[float]) -> None:
    """Raise ValueError unless every zoom factor is above 1 and at most 2, as `classifier.zoom_views` allows."""
    if any(not 1 < zoom <= 2 for zoom in zoom_views):
        raise ValueError(f"expected zoom views above 1 and at most 2, got {list(zoom_views)}")


def describe_views(zoom_views: Sequence[float], flip_average: bool) -> str:
    """Name the views each face is classified in, such as "original, zoom 1.1, each also mirrored"."""
    names = ["original"] + [f"zoom {zoom:g}" for zoom in zoom_views]
    return ", ".join(names) + (", each also mirrored" if flip_average else "")


class EmotionClassifier:
    """Probabilities per emotion for batches of face crops, from a Keras or TFLite model.

    Args:
        model_path: a `.keras` model or its `.tflite` export. Defaults to the
            shipped model of `backend`.
        backend: `keras` or `litert`. Defaults to the one that runs
            `model_path` (`litert` for .tflite), or `keras` without a path.
        num_threads: CPU threads of the litert interpreter; None lets LiteRT
            choose. The keras backend ignores it.
        flip_average: also run every face mirrored left to right and
            average the probabilities (test-time augmentation). Training
            mirrors faces too, so both views are valid inputs.
        zoom_views: zoom factors of extra views of every face, each the
            centre of the face enlarged back to the input size (see
            `classifier.preprocess.zoom_faces`); their probabilities are
            averaged in as well. With flip averaging each view also runs
            mirrored, so a face costs 2 * (1 + len(zoom_views)) model inputs.
            Defaults to the live classifier's `classifier.zoom_views`.
            docs/model.md gives the accuracy of each setting.

    Raises:
        ModelError: the model file is missing, unreadable, of the other
            backend's format, or has the wrong input or output shape. The
            message names the path.

    NOTE: the litert interpreter is not thread-safe, so give each thread its own
    classifier.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        backend: str | None = None,
        num_threads: int | None = None,
        flip_average: bool = True,
        zoom_views: Sequence[float] = DEFAULT_ZOOM_VIEWS,
    ):
        if backend is None:
            backend = "keras" if model_path is None else backend_for_path(model_path)
        check_backend(backend)
        if model_path is not None and backend_for_path(model_path) != backend:
            raise ModelError(
                f"{model_path} does not fit the {backend} backend, which runs {BACKEND_SUFFIXES[backend]} files: "
                f"pass the backend {backend_for_path(model_path)!r} or a {BACKEND_SUFFIXES[backend]} model"
            )
        self.backend = backend
        self.flip_average = flip_average
        check_zoom_views(zoom_views)
        self.zoom_views = tuple(zoom_views)
        self.model_path = Path(model_path) if model_path is not None else default_model_path(backend)

        started = time.monotonic()
        if backend == "keras":
            self.runner = KerasRunner(self.model_path)
            self.param_count: int | None = self.runner.model.count_params()
        else:
            self.runner = LiteRtRunner(self.model_path, num_threads)
            # The TFLite converter folds batch normalisation into the convolutions,
            # so the flatbuffer contains no count comparable to the Keras one.
            self.param_count = None
        self.input_size: int = self.runner.input_size
        logger.info(
            "Loaded %s for the %s backend in %.1f s (input %dx%d, views per face: %s)",
            self.model_path, backend, time.monotonic() - started, self.input_size, self.input_size,
            self.describe_views(),
        )

    @property
    def views_per_face(self) -> int:
        """Number of model inputs each face becomes: the face, its zoom views and their mirror images."""
        return (1 + len(self.zoom_views)) * (2 if self.flip_average else 1)

    def describe_views(self) -> str:
        return describe_views(self.zoom_views, self.flip_average)

    def predict(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Return float32 probabilities of shape (N, 7), in the order of `classifier.labels.EMOTIONS`.

        `faces` is uint8 of shape (N, S, S) with S the model's input size, or
        any faces that `classifier.preprocess.preprocess_faces` accepts (other
        sizes, BGR or BGRA). The whole batch runs in one model call, which
        contains every view of every face, and returns the mean over views.
        """
        inputs = preprocess_faces(faces, self.input_size)
        count = len(inputs)
        if count == 0:
            return np.zeros((0, NUM_CLASSES), dtype=np.float32)

        views = [inputs] + [zoom_faces(inputs, zoom) for zoom in self.zoom_views]
        if self.flip_average:
            views += [view[:, :, ::-1, :] for view in views]  # axis 2 is the image width
        if len(views) == 1:
            return np.asarray(self.runner(inputs), dtype=np.float32)

        probabilities = np.asarray(self.runner(np.concatenate(views)), dtype=np.float32)
        return probabilities.reshape(len(views), count, NUM_CLASSES).mean(axis=0)
