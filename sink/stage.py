"""Stage logic of the sink: join frames with their classifications and write the outputs.

The sink binds one PULL socket that the detector (frames with boxes, ends of
stream) and the classifier workers (classifications) push to. Released frames
go to the recorder, the events file and the window, in frame-index order per
source. Once every source has ended and no frame is held, `step()` returns
False, so the process closes its files and exits with status 0.
"""

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import zmq

from common.logs import RateLimitedLog
from common.metrics import (END_TO_END_LATENCY, FACES, FRAMES, FRAMES_DROPPED, OUTPUT_FPS, QUEUE_DEPTH,
                            STAGE_LATENCY)
from common.schema import Classifications, DetectedFrame, EndOfStream
from common.transport import Receiver
from sink.annotate import Annotator
from sink.display import Display
from sink.events import EventWriter
from sink.joiner import FrameJoiner, JoinedFrame
from sink.recorder import DEFAULT_FPS, Recorder

logger = logging.getLogger(__name__)

STAGE = "sink"
# Messages handled per step after the first, so a burst does not wait for the next step.
MAX_MESSAGES_PER_STEP = 64
FPS_WINDOW_S = 2.0


class SinkStage:
    """Receive on `endpoint` (bound here) and write annotated video, events and a window.

    `expected_sources`: the sink finishes when all of them have ended. Without
    it, it finishes when every source it has seen has ended, so a source whose
    first frame comes after the others ended is missed.

    `finish_when_idle_s`: set when capture had already finished before this
    sink started, as after a sink restart late in a file source. The ends of
    stream went to the previous sink and will not come again, so the sink
    finishes once no message came for that long and no frame is held.
    """

    def __init__(self, endpoint: str, *, record: Path | None = None, events: Path | None = None,
                 display: bool = False, classification_timeout_s: float = 2.0, max_pending_frames: int = 256,
                 hwm: int = 64, expected_sources: Sequence[str] = (), default_fps: float = DEFAULT_FPS,
                 events_flush_interval_s: float = 1.0, finish_when_idle_s: float | None = None,
                 context: zmq.Context | None = None):
        if finish_when_idle_s is not None and finish_when_idle_s <= 0:
            raise ValueError(f"finish_when_idle_s must be above 0 seconds or None, got {finish_when_idle_s}")
        self.endpoint = endpoint
        self.record = record
        self.events_path = events
        self.display_enabled = display
        self.hwm = hwm
        self.expected_sources = list(expected_sources)
        self.default_fps = default_fps
        self.events_flush_interval_s = events_flush_interval_s
        self.finish_when_idle_s = finish_when_idle_s
        self.frames_released = 0
        self.joiner = FrameJoiner(timeout_s=classification_timeout_s, max_frames=max_pending_frames,
                                  on_drop=self._count_drop)
        self._annotator = Annotator()
        self._context = context
        self._receiver: Receiver | None = None
        self._recorder: Recorder | None = None
        self._events: EventWriter | None = None
        self._display: Display | None = None
        self._quit_requested = False
        self._fps_windows: dict[str, tuple[float, int]] = {}  # source -> (window start, frames)
        self._unexpected_log = RateLimitedLog(logger)
        self._gap_log = RateLimitedLog(logger)
        self._last_released: dict[str, int] = {}
        self._last_message_time = time.monotonic()

    @property
    def bound_endpoint(self) -> str:
        return self._receiver.endpoint

    def setup(self) -> None:
        # The display check comes first, so a missing display fails before any file is created.
        if self.display_enabled:
            self._display = Display()
            self._display.open()
        self._receiver = Receiver(self.endpoint, bind=True, hwm=self.hwm, stage=STAGE, context=self._context)
        if self.record is not None:
            self._recorder = Recorder(self.record, default_fps=self.default_fps)
        if self.events_path is not None:
            self._events = EventWriter(self.events_path, flush_interval_s=self.events_flush_interval_s)
        logger.info("Sink listening on %s (record: %s, events: %s, display: %s)", self.bound_endpoint,
                    self.record, self.events_path, self.display_enabled)

    def step(self, timeout_s: float) -> bool:
        message = self._receiver.recv(round(timeout_s * 1000))
        handled = 0
        if message is not None:
            self._last_message_time = time.monotonic()
        while message is not None:
            self._dispatch(message)
            handled += 1
            if handled > MAX_MESSAGES_PER_STEP:
                break
            message = self._receiver.recv(0)

        for joined in self.joiner.pop_ready():
            self._output(joined)
        if self._events is not None:
            self._events.flush_if_due()
        QUEUE_DEPTH.labels(stage=STAGE).set(self.joiner.held_frames)

        if self._quit_requested:
            return False
        if self._all_ended():
            logger.info("Every source ended (%s); frames released: %d", ", ".join(self.joiner.source_ids),
                        self.frames_released)
            return False
        if self._idle_after_capture_finished():
            logger.info("Capture finished before this sink started and no message came for %.1f s; "
                        "finishing. Frames released: %d", self.finish_when_idle_s, self.frames_released)
            return False
        return True

    def close(self) -> None:
        """Finish the recording and the events file even when a step failed. Safe to call twice."""
        try:
            if self._recorder is not None:
                self._recorder.close()
        finally:
            try:
                if self._events is not None:
                    self._events.close()
            finally:
                if self._display is not None:
                    self._display.close()
                if self._receiver is not None:
                    self._receiver.close()

    def _dispatch(self, message) -> None:
        if isinstance(message, DetectedFrame):
            self.joiner.add_frame(message)
        elif isinstance(message, Classifications):
            self.joiner.add_classifications(message)
        elif isinstance(message, EndOfStream):
            self.joiner.add_end_of_stream(message)
        else:
            self._unexpected_log.warning("Ignored a %s message of %s frame %d: the sink expects detected_frame, "
                                         "classifications and end_of_stream", message.kind, message.source_id,
                                         message.frame_index)

    def _output(self, joined: JoinedFrame) -> None:
        started = time.monotonic()
        frame = joined.frame
        if self._recorder is not None or self._display is not None:
            annotated = self._annotator.draw(joined)
            if self._recorder is not None:
                self._recorder.write(frame.source_id, annotated, frame.fps)
            if self._display is not None and not self._display.show(frame.source_id, annotated):
                self._quit_requested = True
        if self._events is not None:
            self._events.write(joined)

        self.frames_released += 1
        source = frame.source_id
        self._check_gap(source, frame.frame_index)
        FRAMES.labels(stage=STAGE, source=source).inc()
        FACES.labels(stage=STAGE, source=source).inc(len(frame.boxes))
        END_TO_END_LATENCY.labels(source=source).observe(max(joined.released_time - frame.capture_time, 0.0))
        STAGE_LATENCY.labels(stage=STAGE, source=source).observe(time.monotonic() - started)
        self._update_fps(source)

    def _update_fps(self, source: str) -> None:
        now = time.monotonic()
        if source not in self._fps_windows:
            self._fps_windows[source] = (now, 0)  # this frame opens the first window
            return
        window_start, frames = self._fps_windows[source]
        frames += 1
        if now - window_start >= FPS_WINDOW_S:
            OUTPUT_FPS.labels(source=source).set(frames / (now - window_start))
            window_start, frames = now, 0
        self._fps_windows[source] = (window_start, frames)

    def _check_gap(self, source: str, frame_index: int) -> None:
        """Log frames that never reached the sink, such as those a crashed detector held."""
        last = self._last_released.get(source)
        if last is not None and frame_index > last + 1:
            # NOTE: capture's own drops (stale frames of a live source) also leave gaps. Capture
            # counts those, so a gap is logged here but not counted again.
            missing = f"Frame {last + 1}" if frame_index == last + 2 else f"Frames {last + 1} to {frame_index - 1}"
            self._gap_log.warning("%s of %s never reached the sink (dropped or lost upstream)", missing, source)
        self._last_released[source] = frame_index

    def _all_ended(self) -> bool:
        sources = self.expected_sources or self.joiner.source_ids
        return bool(sources) and all(self.joiner.ended(source) for source in sources)

    def _idle_after_capture_finished(self) -> bool:
        if self.finish_when_idle_s is None or self.joiner.held_frames:
            return False
        return time.monotonic() - self._last_message_time >= self.finish_when_idle_s

    def _count_drop(self, source_id: str, frame_index: int, reason: str) -> None:
        FRAMES_DROPPED.labels(stage=STAGE, source=source_id, reason=reason).inc()
