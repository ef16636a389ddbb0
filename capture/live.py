"""Live sources (RTSP and HTTP streams, webcams) and the reader thread that keeps only their newest frame."""

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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

# The value this process wrote into FFMPEG_OPTIONS_VARIABLE, so a later stream may
# replace it with its own transport while a value set by the user is kept.
_written_ffmpeg_options: str | None = None


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
            elapsed_s = time.monotonic() - started
            # A refused connection fails at once, so the message names the timeout only when it ran out.
            when = f" within {self.open_timeout_s:g} s" if elapsed_s >= self.open_timeout_s * 0.9 else ""
            raise SourceError(
                f"Could not open the stream {redact_url(self.url)}{when}: check the address, port, path and "
                "credentials, and that the server is running and reachable."
            )
        self._capture = capture
        self.fps = valid_fps(capture.get(cv2.CAP_PROP_FPS))
        logger.info("Opened stream %s in %.2f s at %s fps",
                    redact_url(self.url), time.monotonic() - started, self.fps)

    def _set_transport(self) -> None:
        if urlsplit(self.url).scheme.lower() not in ("rtsp", "rtsps"):
            return
        # FFmpeg's default, UDP, often fails behind NAT and loses packets on busy networks, which smears frames.
        global _written_ffmpeg_options
        option = f"rtsp_transport;{self.rtsp_transport}"
        current = os.environ.get(FFMPEG_OPTIONS_VARIABLE)
        if current is None or current == _written_ffmpeg_options:
            os.environ[FFMPEG_OPTIONS_VARIABLE] = option
            _written_ffmpeg_options = option
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


@dataclass(frozen=True)
class ReconnectPolicy:
    """When to reopen a live source that stopped delivering frames.

    The delay before reopen attempt k (0-based) is `delay_s * 2**k`, capped at
    `max_delay_s`. `max_attempts` counts failed attempts in a row: None retries
    without limit, so a camera that comes back is picked up again, and 0 ends the
    stream at the first loss.
    """

    delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_attempts: int | None = None

    def __post_init__(self):
        if not self.delay_s > 0:
            raise ValueError(f"reconnect delay must be above 0 seconds, got {self.delay_s}")
        if self.max_delay_s < self.delay_s:
            raise ValueError(f"maximum reconnect delay {self.max_delay_s} s is below the first delay "
                             f"{self.delay_s} s; raise the maximum or lower the delay")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError(f"reconnect attempts must be at least 0 or None for no limit, got {self.max_attempts}")

    def delay_before(self, attempt: int) -> float:
        """Return the wait in seconds before reopen attempt `attempt` (0-based)."""
        # The exponent is capped so that an endless retry never overflows a float.
        return min(self.delay_s * 2 ** min(attempt, 32), self.max_delay_s)


class LatestFrameReader:
    """A thread that reads a live source and keeps only the newest frame not taken yet.

    A frame replaced before `get()` took it is counted in `stale_frames`. When the
    source stops returning frames, the reader closes and reopens it as `reconnect`
    allows and ends once the attempts are used up. Its state is one of
    SOURCE_STATES: `connecting` until the first frame, `streaming`, `stalled` (no
    frame for `stall_timeout_s`, set by `check_stall`), `reconnecting` until the
    first frame after a reopen, and `ended`. Each change is logged once with
    `name` and the reason, and passed to `on_state(state, reason)`.
    """

    def __init__(self, source: Source, *, name: str | None = None, reconnect: ReconnectPolicy = ReconnectPolicy(),
                 stall_timeout_s: float = 5.0,
                 on_state: Callable[[str, str], None] | None = None):
        if not stall_timeout_s > 0:
            raise ValueError(f"stall_timeout_s must be above 0 seconds, got {stall_timeout_s}")
        self.source = source
        self.name = name or repr(source)
        self.reconnect = reconnect
        self.stall_timeout_s = stall_timeout_s
        self.on_state = on_state
        self.stale_frames = 0
        self.reconnects = 0  # reopen attempts so far
        self.error: BaseException | None = None
        self.end_reason = ""  # why the reader ended: stream_ended, reconnect_failed, read_error or stopped
        self.state = "connecting"
        self._state_lock = threading.Lock()
        self._condition = threading.Condition()
        self._latest: SourceFrame | None = None
        self._finished = False
        self._stop = threading.Event()
        self._last_progress = time.monotonic()  # monotonic time of the last frame or (re)open
        # (operation, monotonic start, timeout in seconds or None) of the open or read the thread is blocked in.
        self._blocking_call: tuple[str, float, float | None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"{source.kind}-reader", daemon=True)

    def start(self) -> None:
        self._last_progress = time.monotonic()
        self._thread.start()

    def get(self, timeout_s: float) -> SourceFrame | None:
        """Take the newest frame, waiting up to `timeout_s`. Returns None when no new frame came."""
        with self._condition:
            self._condition.wait_for(lambda: self._latest is not None or self._finished, timeout=timeout_s)
            frame, self._latest = self._latest, None
            return frame

    @property
    def connected(self) -> bool:
        """True while frames arrive: from a frame until the stream stalls or is lost."""
        return self.state == "streaming"

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

    def check_stall(self, now: float | None = None) -> bool:
        """Mark the source `stalled` when no frame came for `stall_timeout_s`. Returns whether it is stalled.

        The reader thread may be blocked in a read at that moment. That read returns
        once the source's read timeout passes, and the reader then reopens the source.
        """
        now = time.monotonic() if now is None else now
        silent_s = now - self._last_progress
        if silent_s >= self.stall_timeout_s:
            self._set_state("stalled", f"no frame for {silent_s:.1f} s", only_from=("connecting", "streaming"))
        return self.state == "stalled"

    def overdue_s(self, now: float | None = None) -> float:
        """Return how many seconds the open or read the thread is blocked in has run past its timeout.

        0 when the thread is not blocked, is within the timeout, or the call has no
        timeout (webcams). A positive value means OpenCV ignored its own timeout.
        """
        call = self._blocking_call
        if call is None or call[2] is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, now - call[1] - call[2])

    def stop(self, timeout_s: float) -> bool:
        """Stop the thread and close the source. Returns False when the thread is still blocked in a read."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            # Releasing a capture that another thread is reading from can crash OpenCV,
            # so the source is left to the daemon thread and closes with the process.
            logger.warning("Reader of %s is still blocked in a read after %.1f s; leaving it to exit with the process",
                           self.name, timeout_s)
            return False
        self.source.close()
        return True

    def _run(self) -> None:
        failed_attempts = 0
        loss_reason = ""
        try:
            while not self._stop.is_set():
                frame, timed_out = self._read()
                if frame is not None:
                    self._publish(frame)
                if frame is not None and not timed_out:
                    failed_attempts = 0
                    self._last_progress = time.monotonic()
                    self._set_state("streaming", "frames arriving")
                    continue
                if self._stop.is_set():
                    break
                if not loss_reason:
                    silent_s = time.monotonic() - self._last_progress
                    if timed_out or silent_s >= self.stall_timeout_s:
                        loss_reason = f"no frame for {silent_s:.1f} s"
                        # The read may time out before check_stall() detects the silence.
                        self._set_state("stalled", loss_reason, only_from=("connecting", "streaming"))
                    else:
                        loss_reason = "the stream returned no frame (closed or ended)"
                if not self._reconnect(failed_attempts, loss_reason):
                    break
                loss_reason = self._reopen(failed_attempts)
                failed_attempts += 1
        except Exception as error:  # noqa: BLE001 - the error is kept for the stage and logged here
            self.error = error
            self.end_reason = "read_error"
            logger.exception("Reader of %s failed", self.name)
        finally:
            with self._condition:
                self.end_reason = self.end_reason or "stopped"
                self._finished = True
                self._condition.notify_all()
            self._set_state("ended", self.end_reason)

    def _read(self) -> tuple[SourceFrame | None, bool]:
        """Read one frame. Returns it (or None) and whether the read ran into the source's read timeout."""
        timeout_s = getattr(self.source, "read_timeout_s", None)
        started = time.monotonic()
        frame = self._blocking("read", self.source.read, timeout_s)
        # When FFmpeg's read timeout fires, OpenCV 5.1 still returns the frames its H.264
        # decoder held back, one per timed-out read (seen against a stopped RTSP server).
        # Such a frame is old, so it must not count as the stream being alive.
        timed_out = timeout_s is not None and time.monotonic() - started >= 0.95 * timeout_s
        return frame, timed_out

    def _blocking(self, operation: str, call: Callable, timeout_s: float | None):
        self._blocking_call = (operation, time.monotonic(), timeout_s)
        try:
            return call()
        finally:
            self._blocking_call = None

    def _publish(self, frame: SourceFrame) -> None:
        with self._condition:
            if self._latest is not None:
                self.stale_frames += 1
            self._latest = frame
            self._condition.notify_all()

    def _set_state(self, state: str, reason: str, only_from: tuple[str, ...] | None = None) -> None:
        """Change the state and report the change once; does nothing when it is already `state`."""
        with self._state_lock:
            previous = self.state
            if state == previous or (only_from is not None and previous not in only_from):
                return
            self.state = state
        if reason in ("reconnect_failed", "read_error"):
            level = logging.ERROR
        elif state in ("stalled", "reconnecting"):
            level = logging.WARNING
        else:
            level = logging.INFO
        logger.log(level, "Source %s is %s (was %s): %s", self.name, state, previous, reason)
        if self.on_state is not None:
            self.on_state(state, reason)

    def _reconnect(self, failed_attempts: int, loss_reason: str) -> bool:
        """Close the source and wait before reopening it. Returns False when the attempts are used up or a stop came."""
        limit = self.reconnect.max_attempts
        if limit is not None and failed_attempts >= limit:
            if limit == 0:
                self.end_reason = "stream_ended"
                logger.info("Source %s ended: %s; reconnecting is off", self.name, loss_reason)
            else:
                self.end_reason = "reconnect_failed"
                logger.error("Source %s returned no frame after %d reconnect attempts; ending it",
                             self.name, failed_attempts)
            return False

        delay_s = self.reconnect.delay_before(failed_attempts)
        of_limit = f" of {limit}" if limit is not None else ""
        self._set_state("reconnecting", loss_reason)
        logger.warning("Reconnecting to %s in %.1f s (attempt %d%s): %s",
                       self.name, delay_s, failed_attempts + 1, of_limit, loss_reason)
        self.source.close()
        if self._stop.wait(delay_s):
            self.end_reason = "stopped"
            return False
        return True

    def _reopen(self, failed_attempts: int) -> str:
        """Reopen the source. Returns why it failed, or "" when it opened."""
        self.reconnects += 1
        try:
            self._blocking("open", self.source.open, getattr(self.source, "open_timeout_s", None))
        except SourceError as error:
            logger.warning("Reconnect attempt %d to %s failed: %s", failed_attempts + 1, self.name, error)
            return f"reopen failed: {error}"
        self._last_progress = time.monotonic()
        return ""
