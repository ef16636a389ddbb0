"""Stage logic of capture: read a source and send its frames to the detector.

File sources (video files, images, folders, the demo) send every frame in order
with a blocking send, so a slow detector slows the reading down and no frame is
dropped. Live sources (streams, webcams) read on a thread that keeps only the
newest frame, and send without blocking. A frame replaced before it was sent
counts as dropped `stale`, a frame the full queue rejected as `downstream_full`.
A live source that is lost or stalls is reopened with exponential backoff, and
its state (capture.live.LatestFrameReader) goes to `emotion_source_state`.
"""

import dataclasses
import logging
import time

import zmq

from capture.live import LatestFrameReader, ReconnectPolicy
from capture.sources import Source, SourceFrame
from common.logs import RateLimitedLog
from common.metrics import (FRAMES, FRAMES_DROPPED, SOURCE_CONNECTED, SOURCE_RECONNECTS, STAGE_LATENCY,
                            set_source_state)
from common.schema import EndOfStream, Frame, stamp
from common.transport import Sender

logger = logging.getLogger(__name__)

STAGE = "capture"
SENT_TIMESTAMP = "capture.sent"

# Drop reasons in emotion_frames_dropped_total{stage="capture"}.
STALE = "stale"
DOWNSTREAM_FULL = "downstream_full"
CORRUPT_FRAME = "corrupt_frame"

# How long close() tries to queue the end of stream after a stop request.
END_OF_STREAM_TIMEOUT_S = 1.0
# How long close() waits for the queued frames and the end of stream to reach the detector.
DRAIN_TIMEOUT_S = 5.0
# How far past its own open or read timeout an OpenCV call may run before the stage gives up on it.
# Against a stopped RTSP server, OpenCV 5.1's FFmpeg backend returned within 15 ms of a 2 s read
# timeout, so a call 5 s past its timeout is one the timeout does not cover.
HUNG_CALL_GRACE_S = 5.0
# A file source waits for the detector; after this long without a frame taken it warns, and then again
# at this interval.
BLOCKED_WARNING_S = 10.0


class CaptureStage:
    """Read `source` and send `Frame` messages to `endpoint`, then one `EndOfStream`.

    With `realtime`, file sources are paced at their frame rate instead of as fast
    as the detector accepts them. A live source that stops delivering frames, or
    delivers none for `stall_timeout_s`, is closed and reopened as `reconnect`
    allows; its state is published in `emotion_source_state`.
    """

    def __init__(self, source: Source, endpoint: str, *, source_id: str, realtime: bool = False, hwm: int = 4,
                 reconnect: ReconnectPolicy = ReconnectPolicy(), stall_timeout_s: float = 5.0,
                 context: zmq.Context | None = None):
        self.source = source
        self.endpoint = endpoint
        self.source_id = source_id
        self.realtime = realtime
        self.hwm = hwm
        self.reconnect = reconnect
        self.stall_timeout_s = stall_timeout_s
        self.frames_sent = 0
        # A context of our own can be terminated in close(), which is what waits for the queue to drain.
        self._owns_context = context is None
        self._context = context or zmq.Context()
        self._sender: Sender | None = None
        self._reader: LatestFrameReader | None = None
        self._pending: Frame | EndOfStream | None = None
        self._ended = False
        self._first_frame: tuple[int, float] | None = None  # (frame index, monotonic time) that pacing counts from
        self._counted = {"skipped": 0, "stale": 0, "reconnects": 0}
        self._last_send = time.monotonic()  # of a file frame, for the warning when the detector takes none
        self._blocked_log = RateLimitedLog(logger, burst=1, interval_s=BLOCKED_WARNING_S)

    def setup(self) -> None:
        if self.source.live:
            set_source_state(self.source_id, "connecting")
            # Export the counter from the start, so that dashboards and alerts see a series at 0.
            SOURCE_RECONNECTS.labels(source=self.source_id).inc(0)
        self.source.open()
        # The send queue is kept short on purpose: with the detector's receive queue it bounds
        # how many frames wait between capture and detection. A live source drops once both are
        # full, so its latency stays at a few frames instead of growing while downstream lags.
        self._sender = Sender(self.endpoint, bind=False, hwm=self.hwm, stage=STAGE, context=self._context)
        if self.source.live:
            self._reader = LatestFrameReader(self.source, name=self.source_id, reconnect=self.reconnect,
                                             stall_timeout_s=self.stall_timeout_s, on_state=self._publish_state)
            self._reader.start()
        if self.realtime and not self.source.live and self.source.fps is None:
            logger.warning("Source %r has no frame rate, so --realtime cannot pace it; sending as fast as the "
                           "detector accepts", self.source)
        logger.info("Capturing %r (%s) as %s to %s", self.source, self.source.kind, self.source_id, self.endpoint)

    def step(self, timeout_s: float) -> bool:
        if self._ended:
            return False
        if isinstance(self._pending, EndOfStream):
            return self._send_end(timeout_s)
        if self._reader is not None:
            return self._step_live(timeout_s)
        return self._step_file(timeout_s)

    def close(self) -> None:
        try:
            if self._reader is not None:
                longest_call_s = max(getattr(self.source, "read_timeout_s", 0.0),
                                     getattr(self.source, "open_timeout_s", 0.0))
                self._reader.stop(timeout_s=longest_call_s + 1.0)
                set_source_state(self.source_id, "ended")
            else:
                self.source.close()
            if self._sender is not None and not self._ended:
                # A stop request ends the stream too, so the sink can finish its files.
                self._pending = self._end_of_stream("stopped")
                if self._send_end(END_OF_STREAM_TIMEOUT_S):
                    logger.warning("Could not send the end of stream of %s within %.1f s: the detector's queue "
                                   "stayed full", self.source_id, END_OF_STREAM_TIMEOUT_S)
        finally:
            self._close_sender()
            logger.info("Capture of %s closed after %d frames sent, %d skipped", self.source_id,
                        self.frames_sent, self.source.frames_skipped)

    def _close_sender(self) -> None:
        """Close the socket, first letting the queued frames and the end of stream reach the detector."""
        if self._sender is not None:
            # Linger 0 would discard queued messages, so the last frames of a file and its
            # end of stream would be lost whenever the detector lags.
            # NOTE: linger covers only this side. When the detector's receive queue has room for
            # only 1 or 2 messages, libzmq sometimes loses the last ones as this connection closes.
            linger_ms = round(DRAIN_TIMEOUT_S * 1000) if self._ended else 0
            self._sender.close(linger_ms=linger_ms)
            self._sender = None
        if self._owns_context and not self._context.closed:
            started = time.monotonic()
            self._context.term()  # returns once the queue is sent or the linger time has passed
            elapsed = time.monotonic() - started
            if elapsed >= DRAIN_TIMEOUT_S:
                logger.warning("The detector did not take the last frames of %s within %.1f s; they are lost",
                               self.source_id, DRAIN_TIMEOUT_S)

    def _step_file(self, timeout_s: float) -> bool:
        if self._pending is None:
            read = self.source.read()
            self._count_source_drops()
            if read is None:
                self._pending = self._end_of_stream("end_of_file")
                return self._send_end(timeout_s)
            self._pending = self._frame_message(read)

        if self.realtime:
            if not self._due(self._pending, timeout_s):
                return True
            # A paced file plays a live source, whose frame exists only from its due time. The
            # file was decoded ahead of that, and the wait is not latency of the pipeline.
            self._pending = dataclasses.replace(self._pending, capture_time=time.time())
        message = stamp(self._pending, SENT_TIMESTAMP)
        if not self._sender.send(message, block=True, timeout_ms=round(timeout_s * 1000)):
            # The detector is busy or not running: keep the frame and try again on the next step.
            waited_s = time.monotonic() - self._last_send
            if waited_s >= BLOCKED_WARNING_S:
                self._blocked_log.warning("The detector at %s has not taken a frame of %s for %.0f s; waiting. "
                                          "Check that the detector is running", self.endpoint, self.source_id,
                                          waited_s)
            return True
        self._count_sent(message)
        self._last_send = time.monotonic()
        self._pending = None
        return True

    def _step_live(self, timeout_s: float) -> bool:
        read = self._reader.get(timeout_s)
        self._count_source_drops()
        self._check_reader()
        if read is None:
            if self._reader.error is not None:
                # A failure other than a lost stream: crash, so that the supervisor restarts capture.
                raise RuntimeError(f"reading {self.source!r} failed") from self._reader.error
            if self._reader.ended:
                self._pending = self._end_of_stream(self._reader.end_reason)
                return self._send_end(timeout_s)
            return True

        message = stamp(self._frame_message(read), SENT_TIMESTAMP)
        if self._sender.send(message, block=False):
            self._count_sent(message)
        else:
            FRAMES_DROPPED.labels(stage=STAGE, source=self.source_id, reason=DOWNSTREAM_FULL).inc()
            logger.debug("Dropped frame %d of %s: the detector's queue is full", read.frame_index, self.source_id)
        return True

    def _check_reader(self) -> None:
        """Publish a stall, and crash the stage when a read or open hangs well past OpenCV's own timeout."""
        self._reader.check_stall()
        overdue_s = self._reader.overdue_s()
        if overdue_s > HUNG_CALL_GRACE_S:
            # The reader thread cannot be interrupted from here. Exiting lets the supervisor
            # restart capture with a fresh process instead of leaving the source silent.
            raise RuntimeError(f"the reader of {self.source_id} has been blocked in OpenCV {overdue_s:.0f} s past "
                               f"the source's timeout; restarting capture")

    def _publish_state(self, state: str, _reason: str) -> None:
        set_source_state(self.source_id, state)
        SOURCE_CONNECTED.labels(source=self.source_id).set(1 if state == "streaming" else 0)

    def _send_end(self, timeout_s: float) -> bool:
        """Send the pending end of stream. Returns False once it was sent, which finishes the stage."""
        if not self._sender.send(self._pending, block=True, timeout_ms=round(timeout_s * 1000)):
            return True
        logger.info("Sent the end of stream of %s after %d frames (%s)", self.source_id, self.frames_sent,
                    self._pending.reason)
        self._pending = None
        self._ended = True
        return False

    def _due(self, frame: Frame, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the frame's time at the source's frame rate; return whether it came."""
        if self.source.fps is None:
            return True
        now = time.monotonic()
        if self._first_frame is None:
            self._first_frame = (frame.frame_index, now)
        first_index, first_time = self._first_frame
        wait_s = first_time + (frame.frame_index - first_index) / self.source.fps - now
        if wait_s > timeout_s:
            time.sleep(timeout_s)
            return False
        if wait_s > 0:
            time.sleep(wait_s)
        return True

    def _frame_message(self, read: SourceFrame) -> Frame:
        return Frame(source_id=self.source_id, frame_index=read.frame_index, capture_time=read.capture_time,
                     timestamps={}, pixels=read.pixels, fps=self.source.fps)

    def _end_of_stream(self, reason: str) -> EndOfStream:
        return EndOfStream(source_id=self.source_id, frame_index=self.frames_sent, capture_time=time.time(),
                           timestamps={}, reason=reason)

    def _count_sent(self, message: Frame) -> None:
        self.frames_sent += 1
        FRAMES.labels(stage=STAGE, source=self.source_id).inc()
        STAGE_LATENCY.labels(stage=STAGE, source=self.source_id).observe(
            message.timestamps[SENT_TIMESTAMP] - message.capture_time)

    def _count_source_drops(self) -> None:
        """Move the source's and the reader's new drop and reconnect counts into the metrics."""
        skipped = self.source.frames_skipped - self._counted["skipped"]
        if skipped:
            FRAMES_DROPPED.labels(stage=STAGE, source=self.source_id, reason=CORRUPT_FRAME).inc(skipped)
            self._counted["skipped"] += skipped
        if self._reader is None:
            return
        stale = self._reader.stale_frames - self._counted["stale"]
        if stale:
            FRAMES_DROPPED.labels(stage=STAGE, source=self.source_id, reason=STALE).inc(stale)
            self._counted["stale"] += stale
        reconnects = self._reader.reconnects - self._counted["reconnects"]
        if reconnects:
            SOURCE_RECONNECTS.labels(source=self.source_id).inc(reconnects)
            self._counted["reconnects"] += reconnects
