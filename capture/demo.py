"""The built-in demo source: a slow pan and zoom over a real portrait, for machines with no camera or file."""

import logging
import math

import cv2
import numpy as np

from capture.sources import Source, SourceError, SourceFrame, read_image

logger = logging.getLogger(__name__)

# Matplotlib ships this photograph of Grace Hopper (512x600, one frontal face) as sample data.
PORTRAIT_NAME = "grace_hopper.jpg"
# Mid gray: on a dark background the Haar detector's histogram equalization washes the
# face out (HaarDetector with its defaults found it in 6 of 75 frames, against 75 of 75 here).
BACKGROUND_BGR = (128, 128, 128)


class DemoSource(Source):
    """A short stream that moves and zooms the portrait across a gray frame: one real face, always visible.

    The portrait travels from the left to the right of the frame and back once,
    and grows by `zoom` and shrinks again on the way.
    """

    kind = "demo"

    def __init__(self, *, frame_count: int = 75, fps: float = 25.0, width: int = 640, height: int = 360,
                 zoom: float = 0.25):
        super().__init__("demo")
        if frame_count < 1 or width < 64 or height < 64:
            raise ValueError(f"expected at least 1 frame of at least 64x64 pixels, got {frame_count} "
                             f"frames of {width}x{height}")
        self.frame_count = frame_count
        self.fps = fps
        self.width = width
        self.height = height
        self.zoom = zoom
        self._portrait: np.ndarray | None = None
        self._position = 0

    def _open_source(self) -> None:
        # Imported here because matplotlib is slow to import and only the demo needs it.
        from matplotlib import cbook

        path = cbook.get_sample_data(PORTRAIT_NAME, asfileobj=False)
        portrait = read_image(path)
        if portrait is None:
            raise SourceError(f"Cannot decode matplotlib's sample image {path}; reinstall matplotlib.")
        self._portrait = portrait
        self._position = 0
        logger.info("Opened the demo source: %d frames of %dx%d at %g fps from %s",
                    self.frame_count, self.width, self.height, self.fps, path)

    def read(self) -> SourceFrame | None:
        if self._portrait is None or self._position >= self.frame_count:
            return None
        index = self._position
        self._position += 1
        return self._count_read(index, self.render(index))

    def _close_source(self) -> None:
        self._portrait = None

    def render(self, index: int) -> np.ndarray:
        """Draw frame `index`: the portrait scaled and shifted by the frame's place in the loop."""
        portrait_height, portrait_width = self._portrait.shape[:2]
        progress = index / max(self.frame_count - 1, 1)

        # At zoom 0 the portrait is 85% of the frame height; it grows by `zoom` at mid-stream.
        scale = 0.85 * self.height / portrait_height * (1 + self.zoom * math.sin(math.pi * progress))
        scaled_width = portrait_width * scale
        scaled_height = portrait_height * scale

        # Horizontal position follows a cosine: left edge, right edge, back to the left edge.
        travel = max(self.width - scaled_width, 0.0)
        left = travel * (1 - math.cos(2 * math.pi * progress)) / 2
        top = (self.height - scaled_height) / 2

        transform = np.float32([[scale, 0, left], [0, scale, top]])
        return cv2.warpAffine(self._portrait, transform, (self.width, self.height),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=BACKGROUND_BGR)
