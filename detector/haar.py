"""OpenCV's frontal-face Haar cascade as a `FaceDetector`."""

import logging
from pathlib import Path

import cv2
import numpy as np

from classifier.preprocess import to_grayscale
from detector.detectors import Box

logger = logging.getLogger(__name__)

CASCADE_FILE = "haarcascade_frontalface_default.xml"

# Debian's opencv-data package installs the same cascade files as the OpenCV
# wheels (byte-identical for the frontal-face cascade in opencv-data 4.6.0 and
# opencv-contrib-python 5.1.0.95).
SYSTEM_CASCADE_DIRS = (
    Path("/usr/share/opencv4/haarcascades"),
    Path("/usr/share/opencv/haarcascades"),
)


class CascadeNotFoundError(FileNotFoundError):
    """The Haar cascade file is in none of the places searched."""


def find_cascade(file_name: str = CASCADE_FILE) -> Path:
    """Return the path of an OpenCV cascade file from the wheel or the system.

    The opencv-contrib-python wheel normally carries the cascades in
    `cv2.data.haarcascades`, but release 5.0.0.93 ships that folder empty.
    """
    wheel_data = getattr(getattr(cv2, "data", None), "haarcascades", None)
    search_dirs = ([Path(wheel_data)] if wheel_data else []) + list(SYSTEM_CASCADE_DIRS)
    for folder in search_dirs:
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(folder) for folder in search_dirs)
    raise CascadeNotFoundError(
        f"Haar cascade {file_name} not found in {searched}. opencv-contrib-python "
        f"{cv2.__version__} may ship without cascade files (5.0.0.93 does): install "
        "opencv-contrib-python 5.1.0.95 or later, install Debian's opencv-data package, "
        "or pass cascade_path"
    )


class HaarDetector:
    """Viola-Jones frontal-face detector, run on a gray copy of each frame.

    Defaults were tuned on 58 frames of a real night-time phone clip and 150
    FER-2013 faces pasted into larger frames (benchmarks/detectors.py --sweep):
    - `scale_factor` 1.1: each pyramid level is 10% smaller. With 1.2 the face
      was missed in 7 of the 58 frames instead of 3.
    - `min_neighbors` 7: a face must be found at 7 overlapping positions. With 5
      the clip gave 14 extra boxes (city lights, hands) instead of 3. With 9 the
      detector found 6 fewer of the 150 FER-2013 faces.
    - `equalize`: contrast-limited local histogram equalization (CLAHE) cut the
      clip's extra boxes from 12 to 3, but missed the face in 2 more frames.
    - `min_size` 40 px: smaller faces are rejected as too small by
      `detector.quality` anyway, and skipping them saves the largest pyramid levels.
    - `max_width` 640 px: wider frames are shrunk to this width before detection
      and the boxes scaled back, so a 1080p frame costs about as much as a 360p
      one. The smallest face found grows by the same factor, to 120 px in a
      1920-wide frame.
    """

    name = "haar"

    def __init__(
        self,
        cascade_path: str | Path | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 7,
        min_size: int = 40,
        max_width: int | None = 640,
        equalize: bool = True,
    ):
        if scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be greater than 1.0, got {scale_factor}")
        if min_neighbors < 0 or min_size < 1:
            raise ValueError(
                f"expected min_neighbors >= 0 and min_size >= 1, got {min_neighbors} and {min_size}"
            )
        if max_width is not None and max_width < min_size:
            raise ValueError(f"max_width {max_width} is smaller than min_size {min_size}")

        self.cascade_path = Path(cascade_path) if cascade_path else find_cascade()
        self.cascade = cv2.CascadeClassifier(str(self.cascade_path))
        if self.cascade.empty():
            raise CascadeNotFoundError(
                f"failed to load a Haar cascade from {self.cascade_path}: pass an OpenCV "
                "cascade XML file"
            )
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_width = max_width
        # Local (CLAHE) rather than global histogram equalization: in a frame with
        # large flat areas, such as black bars, global equalization spends the
        # histogram on the flat area and the face loses contrast. With global
        # equalization, 0 of 23 clip frames with a 125 px face centred in a gray
        # 1280x720 frame were found, and 23 of 23 with CLAHE.
        self.clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)) if equalize else None
        logger.info("Loaded Haar cascade %s", self.cascade_path)

    def detect(self, frame: np.ndarray) -> list[Box]:
        gray = to_grayscale(frame)
        shrink = 1.0
        if self.max_width is not None and gray.shape[1] > self.max_width:
            shrink = self.max_width / gray.shape[1]
            size = (self.max_width, max(1, round(gray.shape[0] * shrink)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        if self.clahe is not None:
            gray = self.clahe.apply(gray)

        found = self.cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        return [
            Box(round(x / shrink), round(y / shrink), round(w / shrink), round(h / shrink))
            for x, y, w, h in np.asarray(found).reshape(-1, 4)
        ]
