"""Conversion of decoded images and video frames to the 8-bit BGR layout every later stage expects."""

import cv2
import numpy as np

from common.schema import MAX_FRAME_SIDE


def to_bgr8(pixels: np.ndarray) -> np.ndarray:
    """Convert a gray, BGR or BGRA image of 8 or 16 bits to a contiguous 8-bit BGR image.

    16-bit values keep their upper 8 bits, which maps 0..65535 onto 0..255 the
    way `cv2.imread` does for `IMREAD_COLOR`. Alpha is dropped, not blended.
    Raises ValueError naming the shape or dtype for any other layout, and for
    an image larger than a message may carry.
    """
    if pixels is None or pixels.size == 0:
        raise ValueError("expected a non-empty image, got an empty array")
    height, width = pixels.shape[:2]
    if height > MAX_FRAME_SIDE or width > MAX_FRAME_SIDE:
        raise ValueError(f"the image is {width}x{height} px, above the limit of {MAX_FRAME_SIDE} px on a side: "
                         "scale it down first, for example with ffmpeg -vf scale")

    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise ValueError(f"expected an image of dtype uint8 or uint16, got {pixels.dtype}")

    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 1):
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return np.ascontiguousarray(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"expected a gray, BGR or BGRA image, got an array of shape {pixels.shape}")
