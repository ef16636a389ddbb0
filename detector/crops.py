"""Square face crops framed like FER-2013 faces, from any detector's boxes.

FER-2013 faces are 48x48 gray squares whose side is about 1.04 times the side
of the OpenCV frontal-face Haar box around the same face, centred on that box.
The classifier learned faces at that framing, so every crop is cut the same
way: the detector's box is first mapped to the Haar box it stands for (see
`FRAMINGS`), then widened to 1.04 times its side.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from classifier.preprocess import DEFAULT_INPUT_SIZE, resize_face, to_grayscale
from detector.detectors import Box

# Crop side / Haar box side for FER-2013 faces. benchmarks/detectors.py found a
# median of 1.05 (quartiles 0.99 and 1.15) on 190 PublicTest faces that Haar
# found after they were upscaled and pasted into larger frames.
FER_CROP_SCALE = 1.04


@dataclass(frozen=True)
class Framing:
    """Correction from one backend's boxes to the Haar boxes around the same faces.

    `scale` is the Haar box side divided by the backend's box side. The offsets
    are the Haar box centre minus the backend's box centre, as fractions of the
    backend's box side (positive `offset_y` means the Haar box sits lower).
    """

    scale: float
    offset_x: float
    offset_y: float


# Medians over the faces that both Haar and the backend found, in 115 frames of
# a real phone clip, two portraits and 300 FER-2013 faces pasted into larger
# frames (benchmarks/detectors.py, per-set numbers in docs/detectors.md).
# BlazeFace short-range: 265 faces, scale quartiles 1.08 and 1.22. Its boxes sit
# lower than Haar's, by 0.03 box sides on the clip (face turned down), 0.11 on
# the FER-2013 faces and 0.15 on the portraits.
# BlazeFace full-range: 161 faces, scale quartiles 1.04 and 1.16. Its boxes sit
# 0.04 box sides higher than Haar's on the clip and 0.06 lower on the others.
# NOTE: the offset varies with head pose and data set. Each set's median is up
# to 0.08 box sides from the value used, about 3 of the crop's 48 pixels.
# The horizontal offsets (-0.025 and +0.007) come from head turns in the clip,
# and a frontal face is symmetric, so offset_x is 0.
FRAMINGS = {
    "haar": Framing(scale=1.0, offset_x=0.0, offset_y=0.0),
    "blazeface": Framing(scale=1.152, offset_x=0.0, offset_y=-0.081),
    "blazeface_full": Framing(scale=1.104, offset_x=0.0, offset_y=0.019),
}


@dataclass(frozen=True)
class CropRegion:
    """The square cut from a frame for one face, in frame pixels.

    `outside_fraction` is the share of the square's area that lies outside the
    frame. Those pixels are filled by repeating the frame's edge pixels.
    """

    x: int
    y: int
    side: int
    outside_fraction: float

    @property
    def clipped(self) -> bool:
        return self.outside_fraction > 0.0


def framing_for(detector_name: str) -> Framing:
    """Return the framing correction measured for a detector backend."""
    try:
        return FRAMINGS[detector_name]
    except KeyError:
        raise ValueError(
            f"no crop framing for detector {detector_name!r}: expected one of "
            f"{', '.join(FRAMINGS)}. Measure a new backend with benchmarks/detectors.py"
        ) from None


def crop_region(box: Box, frame_shape: tuple[int, ...], framing: Framing) -> CropRegion:
    """Place the FER-2013 crop square for `box` in a frame of shape `frame_shape`."""
    if box.w <= 0 or box.h <= 0:
        raise ValueError(f"expected a box with positive width and height, got {box}")
    frame_height, frame_width = frame_shape[:2]
    if frame_height <= 0 or frame_width <= 0:
        raise ValueError(f"expected a non-empty frame, got shape {frame_shape}")

    centre_x, centre_y = box.centre
    haar_side = box.side * framing.scale
    haar_centre_x = centre_x + framing.offset_x * box.side
    haar_centre_y = centre_y + framing.offset_y * box.side

    side = max(1, round(haar_side * FER_CROP_SCALE))
    x = round(haar_centre_x - side / 2)
    y = round(haar_centre_y - side / 2)

    inside_width = max(0, min(x + side, frame_width) - max(x, 0))
    inside_height = max(0, min(y + side, frame_height) - max(y, 0))
    outside_fraction = 1.0 - (inside_width * inside_height) / (side * side)
    return CropRegion(x, y, side, outside_fraction)


def cut_crop(frame: np.ndarray, region: CropRegion, size: int = DEFAULT_INPUT_SIZE) -> np.ndarray:
    """Cut `region` from a gray, BGR or BGRA frame of 8 or 16 bits as a uint8 gray square.

    Pixels of a clipped region that fall outside the frame repeat the nearest
    edge pixel. Callers decide from `region.outside_fraction` whether such a
    crop is usable (see `detector.quality`).
    """
    if region.outside_fraction >= 1.0:
        raise ValueError(f"crop region {region} lies entirely outside the frame of shape {frame.shape}")
    frame_height, frame_width = frame.shape[:2]
    left, top = max(region.x, 0), max(region.y, 0)
    right = min(region.x + region.side, frame_width)
    bottom = min(region.y + region.side, frame_height)

    # Converting only the cut keeps the colour conversion cost independent of frame size.
    gray = to_grayscale(np.ascontiguousarray(frame[top:bottom, left:right]))
    if region.clipped:
        gray = cv2.copyMakeBorder(
            gray,
            top - region.y,
            region.y + region.side - bottom,
            left - region.x,
            region.x + region.side - right,
            cv2.BORDER_REPLICATE,
        )
    return resize_face(gray, size)
