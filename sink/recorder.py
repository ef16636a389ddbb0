"""Write annotated frames to video files with `cv2.VideoWriter`, one file per source."""

import logging
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# MPEG-4 Part 2 in MP4, encoded by FFmpeg's own mpeg4 encoder. H.264 ('avc1') needs an
# external encoder, and the opencv-contrib-python 5.0.0.93 wheel cannot open a writer for it.
DEFAULT_FOURCC = "mp4v"
DEFAULT_FPS = 25.0
SOURCE_PLACEHOLDER = "{source}"


class RecorderError(OSError):
    """A video file that cannot be created or written."""


class Recorder:
    """Record the frames of each source to its own video file at the source's frame rate and size.

    The path may contain `{source}`, which is replaced by the source id. Without it
    the first source writes to the path itself and each later source to
    `STEM.SOURCE_ID.SUFFIX`. The first frame of a source fixes the file's size,
    rounded down to even sides. A later frame of another size is scaled to fit,
    with black borders. A source
    without a frame rate is written at `default_fps`. The files are complete only
    after `close()`, because MP4 stores its index at the end, so call it in a
    `finally` block or use the recorder as a context manager.
    """

    def __init__(self, path: Path, *, fourcc: str = DEFAULT_FOURCC, default_fps: float = DEFAULT_FPS):
        if len(fourcc) != 4:
            raise ValueError(f"fourcc must be 4 characters such as 'mp4v', got {fourcc!r}")
        if default_fps <= 0:
            raise ValueError(f"default_fps must be above 0, got {default_fps}")
        self.path = Path(path)
        self.fourcc = fourcc
        self.default_fps = default_fps
        self.frames_written: dict[str, int] = {}
        self._writers: dict[str, tuple[cv2.VideoWriter, Path, tuple[int, int]]] = {}
        self._resize_logged: set[str] = set()
        self._closed = False

    def path_for(self, source_id: str) -> Path:
        """Return the file that the frames of `source_id` go to."""
        text = str(self.path)
        if SOURCE_PLACEHOLDER in text:
            return Path(text.replace(SOURCE_PLACEHOLDER, source_id))
        if not self._writers or next(iter(self._writers)) == source_id:
            return self.path
        return self.path.with_name(f"{self.path.stem}.{source_id}{self.path.suffix}")

    def write(self, source_id: str, image: np.ndarray, fps: float | None) -> None:
        """Append an 8-bit BGR image to the file of `source_id`, opening the file on its first frame."""
        if self._closed:
            raise RecorderError(f"Cannot record a frame of {source_id} to {self.path}: the recorder is closed")
        if source_id not in self._writers:
            self._open(source_id, image, fps)
        writer, path, (width, height) = self._writers[source_id]
        if image.shape[1] in (width, width + 1) and image.shape[0] in (height, height + 1):
            image = image[:height, :width]
        else:
            image = self._fit(source_id, image, width, height)
        writer.write(image)
        self.frames_written[source_id] += 1

    def close(self) -> None:
        """Finish every file. Safe to call twice."""
        self._closed = True
        writers, self._writers = self._writers, {}
        for source_id, (writer, path, _) in writers.items():
            writer.release()
            logger.info("Closed recording %s of %s after %d frames", path, source_id, self.frames_written[source_id])

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _open(self, source_id: str, image: np.ndarray, fps: float | None) -> None:
        path = self.path_for(source_id)
        if not path.parent.is_dir():
            raise RecorderError(f"Cannot record to {path}: the folder {path.parent} does not exist. Create it "
                                "or choose another path.")
        # FFmpeg's MPEG-4 encoder needs even sides and would scale the frame down to them, so
        # an odd last row or column is cut off instead.
        height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        if width == 0 or height == 0:
            raise RecorderError(f"Cannot record {image.shape[1]}x{image.shape[0]} frames of {source_id}: "
                                "video needs at least 2x2 pixels")
        rate = fps or self.default_fps
        writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*self.fourcc), rate,
                                 (width, height))
        if not writer.isOpened():
            raise RecorderError(f"OpenCV cannot create the video {path} with codec {self.fourcc!r} at "
                                f"{width}x{height}: check that the folder is writable and that the file name "
                                "ends in a container the codec fits, such as .mp4 for mp4v.")
        self._writers[source_id] = (writer, path, (width, height))
        self.frames_written[source_id] = 0
        logger.info("Recording %s to %s: %dx%d at %g fps, codec %s", source_id, path, width, height, rate,
                    self.fourcc)

    def _fit(self, source_id: str, image: np.ndarray, width: int, height: int) -> np.ndarray:
        if source_id not in self._resize_logged:
            self._resize_logged.add(source_id)
            logger.info("Frames of %s changed size from %dx%d to %dx%d; scaling them into the recording",
                        source_id, width, height, image.shape[1], image.shape[0])
        scale = min(width / image.shape[1], height / image.shape[0])
        scaled_width = max(1, round(image.shape[1] * scale))
        scaled_height = max(1, round(image.shape[0] * scale))
        scaled = cv2.resize(image, (scaled_width, scaled_height), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
        top = (height - scaled_height) // 2
        left = (width - scaled_width) // 2
        canvas[top:top + scaled_height, left:left + scaled_width] = scaled
        return canvas
