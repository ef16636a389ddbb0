"""The source interface and the file-backed sources: a video file, an image and a folder of images.

Every source returns frames as 8-bit BGR arrays with the 0-based position of
the frame in the source as its index. A frame that cannot be decoded is
counted in `frames_skipped` and leaves a gap in the indices, so an index
always points at the same frame of the file.
"""

import logging
import math
import re
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, NamedTuple

import cv2
import numpy as np

from capture.convert import to_bgr8

logger = logging.getLogger(__name__)

# Extensions that OpenCV's image codecs read. Files with other extensions in an
# image folder are ignored, so a README or a `.DS_Store` there is not a frame.
IMAGE_EXTENSIONS = frozenset({
    ".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".avif", ".gif",
    ".pbm", ".pgm", ".ppm", ".pxm", ".pnm", ".pfm", ".sr", ".ras", ".tiff", ".tif", ".exr", ".hdr", ".pic",
})

# A video file whose decoder fails this many frames in a row is treated as ended.
MAX_CONSECUTIVE_BAD_FRAMES = 25

# The first SKIP_LOG_FIRST skipped frames of a source are logged one by one. After that
# only every SKIP_LOG_EVERY-th is, so a badly damaged file does not flood the log.
SKIP_LOG_FIRST = 10
SKIP_LOG_EVERY = 100


class SourceError(Exception):
    """A source that cannot be opened or read. The message names the source and what to do."""


class SourceFrame(NamedTuple):
    frame_index: int
    pixels: np.ndarray
    capture_time: float  # Unix seconds when the frame was decoded


class Source(ABC):
    """One input of the capture stage: open it, read frames until `read()` returns None, close it."""

    kind: ClassVar[str]
    live: ClassVar[bool] = False  # live sources produce frames at their own pace and cannot wait

    def __init__(self, spec: str):
        self.spec = spec
        self.fps: float | None = None  # frames per second from the container or device, None when unknown
        self.frames_read = 0
        self.frames_skipped = 0  # frames that could not be decoded
        self.is_open = False

    def open(self) -> None:
        """Open the source; does nothing when it is open. Raises SourceError naming the source when that fails."""
        if self.is_open:
            return
        self._open_source()
        self.is_open = True

    def close(self) -> None:
        """Release the decoder or device. Safe to call twice."""
        if not self.is_open:
            return
        self.is_open = False
        self._close_source()

    @abstractmethod
    def read(self) -> SourceFrame | None:
        """Return the next frame, or None at the end of the source."""

    @abstractmethod
    def _open_source(self) -> None: ...

    @abstractmethod
    def _close_source(self) -> None: ...

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def _count_read(self, frame_index: int, pixels: np.ndarray) -> SourceFrame:
        self.frames_read += 1
        return SourceFrame(frame_index, pixels, time.time())

    def _count_skipped(self, frame_index: int, reason: str) -> None:
        self.frames_skipped += 1
        if self.frames_skipped <= SKIP_LOG_FIRST or self.frames_skipped % SKIP_LOG_EVERY == 0:
            logger.warning("Skipped frame %d of %r: %s (%d skipped so far)",
                           frame_index, self, reason, self.frames_skipped)


def valid_fps(value: float) -> float | None:
    """Return a container's frame rate, or None where it reports 0, NaN or an implausible value."""
    # Sources without timing report 0, and streams with a broken time base report absurd rates.
    if not math.isfinite(value) or value <= 0 or value > 1000:
        return None
    return float(value)


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file to 8-bit BGR with its EXIF orientation applied, or return None if it cannot be decoded.

    Raises ValueError, from `to_bgr8`, for an image that decodes but cannot be a frame.
    """
    # ANYDEPTH | ANYCOLOR keeps 16-bit and gray images for `to_bgr8` and, unlike
    # IMREAD_UNCHANGED, still applies the EXIF orientation.
    pixels = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if pixels is None:
        return None
    return to_bgr8(pixels)


def natural_sort_key(path: Path) -> list:
    """Order names the way people number files: frame2 before frame10."""
    parts = re.split(r"(\d+)", path.name)
    return [int(part) if part.isdigit() else part.lower() for part in parts]


# The other stages need the cores that FFmpeg's own choice, a decoding thread per core, takes.
# In one ad-hoc run on a 2-core machine that choice cost about 5.6 ms of CPU per 1280x720
# H.264 frame against 4.6 ms for one thread (an estimate).
# NOTE: one thread may not keep up with 4K files on a machine with cores to spare.
DECODE_THREADS = 1


class VideoFileSource(Source):
    """A video file decoded by OpenCV's FFmpeg backend, every frame in order."""

    kind = "video_file"

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path
        self.frame_count: int | None = None  # as the container reports it
        self._capture: cv2.VideoCapture | None = None
        self._position = 0
        self._first: SourceFrame | None = None

    def _open_source(self) -> None:
        # Forcing FFmpeg keeps OpenCV from reading a name with '%' as an image sequence pattern.
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, DECODE_THREADS])
        if not capture.isOpened():
            raise SourceError(
                f"OpenCV cannot decode {self.path} as a video: the file is damaged or not a video format "
                "that FFmpeg reads. Check it with `ffprobe` or convert it to MP4 (H.264)."
            )
        self._capture = capture
        # Rotate frames by the file's rotation metadata, as players do. OpenCV 5 does this by
        # default, and the property cannot be passed to open().
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None
        self.fps = valid_fps(capture.get(cv2.CAP_PROP_FPS))

        # FFmpeg opens some non-video files without error, so only a decoded frame proves the file is usable.
        self._first = self._decode_next()
        if self._first is None:
            self._close_source()
            raise SourceError(
                f"OpenCV opened {self.path} but decoded no frame from it: the file is damaged or has no "
                "video stream. Check it with `ffprobe`."
            )
        logger.info("Opened video file %s: %s frames at %s fps", self.path, self.frame_count, self.fps)

    def read(self) -> SourceFrame | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        if self._capture is None:
            return None
        return self._decode_next()

    def _close_source(self) -> None:
        if self._capture is None:
            return
        self._capture.release()
        self._capture = None
        if self.frame_count is not None and self._position < self.frame_count:
            logger.info("Closed %s after %d of its %d frames", self.path, self._position, self.frame_count)

    def _decode_next(self) -> SourceFrame | None:
        consecutive_failures = 0
        while consecutive_failures < MAX_CONSECUTIVE_BAD_FRAMES:
            index = self._position
            if self._capture.grab():
                self._position += 1
                ok, pixels = self._capture.retrieve()
                if ok and pixels is not None and pixels.size:
                    return self._count_read(index, to_bgr8(pixels))
                self._count_skipped(index, "the decoder returned no image")
                consecutive_failures += 1
                continue

            if self.frame_count is None or index >= self.frame_count:
                return None
            # grab() fails on a damaged frame and, left alone, ends the file there. Seeking
            # to the next frame resumes decoding after the damage.
            # NOTE: a container that reports more frames than it contains makes the last
            # ones count as skipped, up to MAX_CONSECUTIVE_BAD_FRAMES.
            self._count_skipped(index, "the decoder failed on it")
            consecutive_failures += 1
            self._position += 1
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, self._position)

        logger.error("Stopped reading %s at frame %d: %d frames in a row could not be decoded",
                     self.path, self._position, MAX_CONSECUTIVE_BAD_FRAMES)
        return None


class ImageFileSource(Source):
    """A single image: one frame, then the end."""

    kind = "image"

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path
        self._pixels: np.ndarray | None = None

    def _open_source(self) -> None:
        try:
            pixels = read_image(self.path)
        except ValueError as error:
            raise SourceError(f"Cannot use the image {self.path} as a frame: {error}") from error
        if pixels is None:
            raise SourceError(
                f"OpenCV cannot decode the image {self.path}: the file is damaged or in a format this "
                "OpenCV build does not read. Convert it to PNG or JPEG."
            )
        self._pixels = pixels
        logger.info("Opened image %s: %dx%d", self.path, pixels.shape[1], pixels.shape[0])

    def read(self) -> SourceFrame | None:
        if self._pixels is None:
            return None
        pixels, self._pixels = self._pixels, None
        return self._count_read(0, pixels)

    def _close_source(self) -> None:
        self._pixels = None


class ImageFolderSource(Source):
    """The images of one folder in natural name order, one frame each.

    Files with an image extension that do not decode are counted as skipped and
    logged. Hidden files, subfolders and other extensions are ignored.
    """

    kind = "image_folder"

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path
        self.files: list[Path] = []
        self._position = 0

    def _open_source(self) -> None:
        entries = [entry for entry in self.path.iterdir() if entry.is_file() and not entry.name.startswith(".")]
        self.files = sorted((entry for entry in entries if entry.suffix.lower() in IMAGE_EXTENSIONS),
                            key=natural_sort_key)
        ignored = len(entries) - len(self.files)
        if not self.files:
            raise SourceError(
                f"The folder {self.path} contains no image files ({ignored} other files). Expected files "
                f"ending in one of: {', '.join(sorted(IMAGE_EXTENSIONS))}."
            )
        logger.info("Opened image folder %s: %d images, %d other files ignored", self.path, len(self.files), ignored)

    def read(self) -> SourceFrame | None:
        while self._position < len(self.files):
            index = self._position
            self._position += 1
            try:
                pixels = read_image(self.files[index])
            except ValueError as error:
                self._count_skipped(index, f"cannot use {self.files[index].name}: {error}")
                continue
            if pixels is not None:
                return self._count_read(index, pixels)
            self._count_skipped(index, f"cannot decode {self.files[index].name}")
        return None

    def _close_source(self) -> None:
        self._position = len(self.files)
