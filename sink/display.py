"""Show annotated frames in a window per source with `cv2.imshow`."""

import logging
import os

import cv2
import numpy as np

logger = logging.getLogger(__name__)

WINDOW_PREFIX = "emotion-pipeline"
QUIT_KEYS = (ord("q"), 27)  # q and Esc


class DisplayError(RuntimeError):
    """No display to show a window on, or an OpenCV build without a GUI backend."""


class Display:
    """One window per source. `show()` returns False once the user pressed q or Esc."""

    def __init__(self):
        self._windows: set[str] = set()

    def open(self) -> None:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise DisplayError(
                "Cannot show a window: neither DISPLAY nor WAYLAND_DISPLAY is set, so there is no display. "
                "Run without --display and use --record, or forward a display (ssh -X)."
            )

    def show(self, source_id: str, image: np.ndarray) -> bool:
        name = f"{WINDOW_PREFIX} {source_id}"
        try:
            if name not in self._windows:
                cv2.namedWindow(name, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
                self._windows.add(name)
                logger.info("Opened window %r; press q or Esc in it to stop", name)
            cv2.imshow(name, image)
            # waitKey runs the GUI event loop; without it the window never paints.
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as error:
            raise DisplayError(f"OpenCV cannot show a window: {error}. This OpenCV build may have no GUI "
                               "backend (opencv-contrib-python-headless); use --record instead.") from error
        if key in QUIT_KEYS:
            logger.info("Quit key pressed in window %r", name)
            return False
        return True

    def close(self) -> None:
        if not self._windows:
            return
        self._windows.clear()
        try:
            cv2.destroyAllWindows()
            cv2.waitKey(1)
        except cv2.error as error:
            logger.warning("Closing the windows failed: %s", error)
