"""Face detectors behind one interface, selected by name.

Every backend returns `Box` objects in the pixel coordinates of the frame it was
given. Backends load their models when created, so a detector stage creates one
detector at start-up and calls `detect` once per frame.
"""

import logging
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

DETECTOR_NAMES = ("haar", "blazeface", "blazeface_full")

# BlazeFace full-range found most faces from 7% to 56% of the frame width, drew
# no false positive on a real clip or face-free images, and took about a tenth
# of Haar's time per frame. The short-range model is faster but missed most
# faces under 15% of the frame width (benchmarks/detectors.py, numbers and
# limits in docs/detectors.md).
DEFAULT_DETECTOR = "blazeface_full"


@dataclass(frozen=True)
class Box:
    """A face box in frame pixels: top-left corner, width and height.

    A box may extend past the frame edge when the face does. `score` is the
    backend's confidence in [0, 1], or None for backends without one (Haar).
    """

    x: int
    y: int
    w: int
    h: int
    score: float | None = None

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)

    @property
    def side(self) -> float:
        """Mean of width and height, the size that face crops scale with."""
        return (self.w + self.h) / 2


@runtime_checkable
class FaceDetector(Protocol):
    """A face detector: `name` selects the crop framing in `detector.crops`."""

    name: str

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Find faces in a gray, BGR or BGRA frame of dtype uint8 or uint16."""
        ...


def create_detector(name: str = DEFAULT_DETECTOR, **options: Any) -> FaceDetector:
    """Create the detector registered as `name`, passing `options` to its constructor.

    - `haar`: OpenCV's frontal-face Haar cascade (`detector.haar.HaarDetector`).
    - `blazeface`: MediaPipe BlazeFace short-range model, for faces at least about
      15% of the frame width (`detector.blazeface.BlazeFaceDetector`).
    - `blazeface_full`: BlazeFace full-range model, for faces down to about 7% of
      the frame width.
    """
    # Imported here so that choosing one backend never loads the other's runtime.
    if name == "haar":
        from detector.haar import HaarDetector

        detector: FaceDetector = HaarDetector(**options)
    elif name == "blazeface":
        from detector.blazeface import BlazeFaceDetector

        detector = BlazeFaceDetector(model="short_range", **options)
    elif name == "blazeface_full":
        from detector.blazeface import BlazeFaceDetector

        detector = BlazeFaceDetector(model="full_range", **options)
    else:
        raise ValueError(
            f"unknown face detector {name!r}: expected one of {', '.join(DETECTOR_NAMES)}"
        )
    logger.info("Created face detector %s with options %s", name, options)
    return detector
