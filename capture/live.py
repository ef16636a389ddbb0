"""Live sources (RTSP and HTTP streams, webcams) and the reader thread that keeps only their newest frame."""

import logging
import os
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2

from capture.convert import to_bgr8
from capture.sources import MAX_CONSECUTIVE_BAD_FRAMES, Source, SourceError, SourceFrame, valid_fps

logger = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")

# OpenCV's FFmpeg backend reads demuxer options from this variable at every open,
# as `key;value|key;value`.
FFMPEG_OPTIONS_VARIABLE = "OPENCV_FFMPEG_CAPTURE_OPTIONS"

MAX_RECONNECT_DELAY_S = 30.0


def redact_url(url: str) -> str:
    """Return the URL with any password replaced by `***`, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class OpenCVLiveSource(Source):
    """A live `cv2.VideoCapture`: frames are indexed in the order they were decoded, across reconnects."""

    live = True

    def __init__(self, spec: str):
        super().__init__(spec)
        self._capture: cv2.VideoCapture | None = None
        self._position = 0

    def read(self) -> SourceFrame | None:
        """Return the next frame, or None when the stream ended, timed out or the device was lost."""
        for _ in range(MAX_CONSECUTIVE_BAD_FRAMES):
            if self._capture is None:
                return None
            ok, pixels = self._capture.read()
            if not ok or pixels is None or pixels.size == 0:
                return None
            index = self._position
            self._position += 1
            try:
                return self._count_read(index, to_bgr8(pixels))
            except ValueError as error:
                self._count_skipped(index, str(error))
        logger.error("%r returned %d frames in a row that could not be converted", self, MAX_CONSECUTIVE_BAD_FRAMES)
        return None

    def _close_source(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class StreamSource(OpenCVLiveSource):
    """An RTSP or HTTP(S) stream read by OpenCV's FFmpeg backend with open and read timeouts."""

    kind = "stream"

    def __init__(self, url: str, *, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0,
                 rtsp_transport: str = "tcp"):
        super().__init__(url)
        self.url = url
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.rtsp_transport = rtsp_transport

    def __repr__(self) -> str:
        return f"StreamSource({redact_url(self.url)!r})"

    def _open_source(self) -> None:
        self._set_transport()
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000),
        ]
        started = time.monotonic()
        capture = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            raise SourceError(
                f"Could not open the stream {redact_url(self.url)} within {self.open_timeout_s:g} s: check the "
                "address, port, path and credentials, and that the server is running and reachable."
            )
        self._capture = capture
        self.fps = valid_fps(capture.get(cv2.CAP_PROP_FPS))
        logger.info("Opened stream %s in %.2f s at %s fps",
                    redact_url(self.url), time.monotonic() - started, self.fps)

    def _set_transport(self) -> None:
        if urlsplit(self.url).scheme.lower() not in ("rtsp", "rtsps"):
            return
        # FFmpeg's default, UDP, often fails behind NAT and loses packets on busy networks, which smears frames.
        option = f"rtsp_transport;{self.rtsp_transport}"
        current = os.environ.get(FFMPEG_OPTIONS_VARIABLE)
        if current is None:
            os.environ[FFMPEG_OPTIONS_VARIABLE] = option
        elif current != option:
            logger.info("Keeping %s=%r from the environment for %s",
                        FFMPEG_OPTIONS_VARIABLE, current, redact_url(self.url))


def parse_webcam_device(spec: str) -> int | Path:
    """Return the device index of `0`, `1`, ... or the path of `/dev/videoN`."""
    if spec.isdigit():
        return int(spec)
    if spec.startswith("/dev/video"):
        return Path(spec)
    raise SourceError(f"Expected a webcam as a device index such as 0 or a path such as /dev/video0, got {spec!r}")


class WebcamSource(OpenCVLiveSource):
    """A local camera, by index or by `/dev/videoN` path (V4L2 on Linux)."""

    kind = "webcam"

    def __init__(self, spec: str):
        super().__init__(spec)
        self.device = parse_webcam_device(spec)

    def _open_source(self) -> None:
        if isinstance(self.device, Path) and not self.device.exists():
            raise SourceError(
                f"The webcam device {self.device} does not exist. List the cameras with `ls /dev/video*` "
                "and, in a container, pass the device through (docker run --device)."
            )
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        device = str(self.device) if isinstance(self.device, Path) else self.device
        capture = cv2.VideoCapture(device, backend)
        if not capture.isOpened():
            raise SourceError(
                f"Could not open the webcam {self.spec}: no camera has that index or path, another program "
                "is using it, or this user may not read it (add the user to the `video` group)."
            )
        self._capture = capture
        self.fps = valid_fps(capture.get(cv2.CAP_PROP_FPS))
        logger.info("Opened webcam %s at %s fps", self.spec, self.fps)


class LatestFrameReader:
    """A thread that reads a live source and keeps only the newest frame not taken yet.

    A frame replaced before `get()` took it is counted in `stale_frames`. When the
    source stops returning frames, the reader closes and reopens it up to
    `reconnect_attempts` times, doubling the delay each time, and then ends.
    """

    def __init__(self, source: Source, *, reconnect_attempts: int = 3, reconnect_delay_s: float = 1.0):
        self.source = source
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay_s = reconnect_delay_s
        self.stale_frames = 0
        self.reconnects = 0  # reopen attempts so far
        self.connected = True  # False from a failed read until the next frame
        self.error: BaseException | None = None
        self.end_reason = ""  # why the reader ended: stream_ended, reconnect_failed, read_error or stopped
        self._condition = threading.Condition()
        self._latest: SourceFrame | None = None
        self._finished = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{source.kind}-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def get(self, timeout_s: float) -> SourceFrame | None:
        """Take the newest frame, waiting up to `timeout_s`. Returns None when no new frame came."""
        with self._condition:
            self._condition.wait_for(lambda: self._latest is not None or self._finished, timeout=timeout_s)
            frame, self._latest = self._latest, None
            return frame

    @property
    def finished(self) -> bool:
        """True once the source ended or failed for good; its last frame may still wait for `get()`."""
        with self._condition:
            return self._finished

    @property
    def ended(self) -> bool:
        """True once the source ended or failed for good and its last frame was taken."""
        with self._condition:
            return self._finished and self._latest is None

    def stop(self, timeout_s: float) -> bool:
        """Stop the thread and close the source. Returns False when the thread is still blocked in a read."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            # Releasing a capture that another thread is reading from can crash OpenCV,
            # so the source is left to the daemon thread and closes with the process.
            logger.warning("Reader of %r is still blocked in a read after %.1f s; leaving it to exit with the process",
                           self.source, timeout_s)
            return False
        self.source.close()
        return True

    def _run(self) -> None:
        failed_attempts = 0
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    if not self._reconnect(failed_attempts):
                        break
                    failed_attempts += 1
                    continue
                failed_attempts = 0
                self.connected = True
                self._publish(frame)
        except Exception as error:  # noqa: BLE001 - the error is kept for the stage and logged here
            self.error = error
            self.end_reason = "read_error"
            logger.exception("Reader of %r failed", self.source)
        finally:
            with self._condition:
                self.end_reason = self.end_reason or "stopped"
                self._finished = True
                self._condition.notify_all()

    def _publish(self, frame: SourceFrame) -> None:
        with self._condition:
            if self._latest is not None:
                self.stale_frames += 1
            self._latest = frame
            self._condition.notify_all()

    def _reconnect(self, failed_attempts: int) -> bool:
        """Reopen the source after a delay. Returns False when the attempts are used up or a stop was requested."""
        self.connected = False
        if self._stop.is_set():
            self.end_reason = "stopped"
            return False
        if failed_attempts >= self.reconnect_attempts:
            if self.reconnect_attempts == 0:
                self.end_reason = "stream_ended"
                logger.info("Source %r ended", self.source)
            else:
                self.end_reason = "reconnect_failed"
                logger.error("Source %r returned no frame after %d reconnect attempts; ending it",
                             self.source, failed_attempts)
            return False

        delay_s = min(self.reconnect_delay_s * 2 ** failed_attempts, MAX_RECONNECT_DELAY_S)
        logger.warning("Source %r returned no frame; reconnecting in %.1f s (attempt %d of %d)",
                       self.source, delay_s, failed_attempts + 1, self.reconnect_attempts)
        self.source.close()
        if self._stop.wait(delay_s):
            self.end_reason = "stopped"
            return False
        self.reconnects += 1
        try:
            self.source.open()
        except SourceError as error:
            logger.warning("Reconnect to %r failed: %s", self.source, error)
        return True
