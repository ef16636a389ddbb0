"""Face preprocessing shared by training, evaluation, the detector and the live classifier.

Every path from pixels to the model goes through `to_grayscale`, `resize_face`
and `scale_faces`, so a face seen live is prepared exactly like a face seen in
training. This module imports only NumPy and OpenCV, so the detector can use it
without loading TensorFlow.
"""

from collections.abc import Sequence

import cv2
import numpy as np

DEFAULT_INPUT_SIZE = 48


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Convert a gray, BGR or BGRA image of 8 or 16 bits to 8-bit gray."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"expected an image of dtype uint8 or uint16, got {image.dtype}")

    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"expected a gray, BGR or BGRA image, got an array of shape {image.shape}")


def resize_face(gray: np.ndarray, size: int = DEFAULT_INPUT_SIZE) -> np.ndarray:
    """Resize a gray face crop to `size` x `size` pixels."""
    if gray.shape == (size, size):
        return gray
    # INTER_AREA averages pixels when shrinking, which avoids aliasing on large crops.
    shrinking = gray.shape[0] > size or gray.shape[1] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interpolation)


def scale_faces(faces: np.ndarray) -> np.ndarray:
    """Scale uint8 faces of shape (N, H, W) to float32 in [-1, 1], shape (N, H, W, 1)."""
    if faces.dtype != np.uint8 or faces.ndim != 3:
        raise ValueError(f"expected uint8 faces of shape (N, H, W), got {faces.dtype} {faces.shape}")
    scaled = faces.astype(np.float32) * (2.0 / 255.0) - 1.0
    return scaled[..., np.newaxis]


def zoom_faces(inputs: np.ndarray, zoom: float) -> np.ndarray:
    """Enlarge the centre of model inputs of shape (N, S, S, 1) by `zoom`, keeping their size.

    A zoom of 1.1 crops the middle S/1.1 pixels of each face and resizes them
    back to S, which frames the face a little tighter.
    """
    if zoom < 1:
        raise ValueError(f"expected a zoom of at least 1, got {zoom}")
    size = inputs.shape[1]
    side = max(1, round(size / zoom))
    if side == size:
        return inputs.copy()

    start = (size - side) // 2
    centres = inputs[:, start:start + side, start:start + side, 0]
    zoomed = [cv2.resize(centre, (size, size), interpolation=cv2.INTER_LINEAR) for centre in centres]
    return np.stack(zoomed)[..., np.newaxis]


def preprocess_faces(
    faces: np.ndarray | Sequence[np.ndarray], size: int = DEFAULT_INPUT_SIZE
) -> np.ndarray:
    """Turn face images of any size and colour layout into model input.

    Returns float32 of shape (N, size, size, 1) in [-1, 1]. A uint8 array of
    shape (N, size, size) takes the fast path: scaling only.
    """
    if isinstance(faces, np.ndarray) and faces.dtype == np.uint8 and faces.shape[1:] == (size, size):
        return scale_faces(faces)

    prepared = [resize_face(to_grayscale(face), size) for face in faces]
    if not prepared:
        return np.zeros((0, size, size, 1), dtype=np.float32)
    return scale_faces(np.stack(prepared))
