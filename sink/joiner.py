"""Join each detected frame with its classifications and release frames in order.

The detector sends a frame with its face boxes straight to the sink, while the
classifier workers send the faces' probabilities later, in any order, possibly
split over several messages, and occasionally before the frame itself. The
joiner holds each frame until every face has probabilities or the frame's
classification timeout passes, and releases the frames of a source in
frame-index order. A frame without faces needs no classification, but it still
waits behind an earlier frame of its source.
"""

import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from common.logs import RateLimitedLog
from common.schema import Classifications, DetectedFrame, EndOfStream

logger = logging.getLogger(__name__)

# Drop reasons, as counted in `emotion_frames_dropped_total{stage="sink"}`.
CLASSIFICATION_TIMEOUT = "classification_timeout"  # released without (all) probabilities
JOINER_FULL = "joiner_full"  # the oldest held frame, dropped for a new one
SOURCE_RESTARTED = "source_restarted"  # held when its source started again from an earlier index

FrameKey = tuple[str, int]


@dataclass
class JoinedFrame:
    """A released frame: probabilities has one row per box, NaN where a face was not classified."""

    frame: DetectedFrame
    probabilities: np.ndarray  # (N, len(labels)) float32
    labels: list[str]
    timed_out: bool
    released_time: float  # Unix seconds

    @property
    def source_id(self) -> str:
        return self.frame.source_id

    @property
    def frame_index(self) -> int:
        return self.frame.frame_index

    def classified(self, face: int) -> bool:
        return bool(self.probabilities.shape[1]) and not np.isnan(self.probabilities[face, 0])


@dataclass
class _HeldFrame:
    frame: DetectedFrame
    deadline: float
    arrival: float
    probabilities: np.ndarray | None = None
    filled: np.ndarray | None = None
    labels: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.frame.boxes) == 0 or (self.filled is not None and bool(self.filled.all()))


@dataclass
class _SourceState:
    heap: list[int] = field(default_factory=list)
    frames: dict[int, _HeldFrame] = field(default_factory=dict)
    last_released: int = -1
    end: EndOfStream | None = None


class FrameJoiner:
    """Hold frames until their classifications are in, then release them in frame-index order per source.

    At most `max_frames` frames are held across all sources. A new frame beyond
    that drops the oldest held frame, counted as `joiner_full`. Classifications
    that arrive before their frame wait up to `timeout_s`, at most `max_frames`
    of them. `on_drop(source_id, frame_index, reason)` is called for every
    dropped frame and every frame released on timeout.
    """

    def __init__(self, *, timeout_s: float = 2.0, max_frames: int = 256,
                 on_drop: Callable[[str, int, str], None] | None = None):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be above 0 seconds, got {timeout_s}")
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        self.timeout_s = timeout_s
        self.max_frames = max_frames
        self.dropped: Counter[tuple[str, str]] = Counter()  # (source_id, reason) -> frames
        self.discarded_classifications = 0  # late, unmatched or expired before their frame came
        self._on_drop = on_drop
        self._sources: dict[str, _SourceState] = {}
        self._early: dict[FrameKey, tuple[float, list[Classifications]]] = {}
        self._held_count = 0
        self._discard_log = RateLimitedLog(logger)

    @property
    def held_frames(self) -> int:
        return self._held_count

    def add_frame(self, frame: DetectedFrame, now: float | None = None) -> None:
        now = time.time() if now is None else now
        state = self._sources.setdefault(frame.source_id, _SourceState())
        if frame.frame_index <= state.last_released or frame.frame_index in state.frames:
            # The detector sends the frames of a source in order, so an index that goes back means
            # that capture started again, as after a crash, when the supervisor restarts it at frame 0.
            self._restart_source(frame.source_id, state, frame.frame_index)
        if self._held_count >= self.max_frames:
            self._drop_oldest()

        entry = _HeldFrame(frame=frame, deadline=now + self.timeout_s, arrival=now)
        heapq.heappush(state.heap, frame.frame_index)
        state.frames[frame.frame_index] = entry
        self._held_count += 1

        _, early = self._early.pop((frame.source_id, frame.frame_index), (now, []))
        for classifications in early:
            self._apply(entry, classifications)

    def add_classifications(self, classifications: Classifications, now: float | None = None) -> None:
        now = time.time() if now is None else now
        key = (classifications.source_id, classifications.frame_index)
        state = self._sources.get(classifications.source_id)
        if state is not None and key[1] in state.frames:
            self._apply(state.frames[key[1]], classifications)
            return
        if state is not None and key[1] <= state.last_released:
            self._discard("Discarded classifications of %s frame %d from worker %s: the frame was already "
                          "released", *key, classifications.worker_id)
            return

        # The classifications overtook their frame.
        if key not in self._early and len(self._early) >= self.max_frames:
            oldest = min(self._early, key=lambda k: self._early[k][0])
            del self._early[oldest]
            self._discard("Discarded early classifications of %s frame %d: classifications of %d frames "
                          "already wait for their frames", *oldest, self.max_frames)
        _, waiting = self._early.setdefault(key, (now, []))
        waiting.append(classifications)

    def add_end_of_stream(self, end: EndOfStream) -> None:
        state = self._sources.setdefault(end.source_id, _SourceState())
        state.end = end
        logger.info("End of stream %s after %d frames (%s); %d frames still held",
                    end.source_id, end.frame_index, end.reason, len(state.frames))

    def pop_ready(self, now: float | None = None) -> list[JoinedFrame]:
        """Release the frames that are complete or past their timeout, in frame-index order per source."""
        now = time.time() if now is None else now
        released = []
        for state in self._sources.values():
            while state.heap:
                entry = state.frames[state.heap[0]]
                if not entry.complete and now < entry.deadline:
                    break
                released.append(self._release(state, entry, now))
        self._expire_early(now)
        return released

    def ended(self, source_id: str) -> bool:
        """True once `source_id` sent its end of stream and none of its frames is held."""
        state = self._sources.get(source_id)
        return state is not None and state.end is not None and not state.frames

    @property
    def source_ids(self) -> list[str]:
        return list(self._sources)

    def _apply(self, entry: _HeldFrame, classifications: Classifications) -> None:
        boxes = entry.frame.boxes
        if entry.probabilities is None:
            entry.labels = list(classifications.labels)
            entry.probabilities = np.full((len(boxes), len(entry.labels)), np.nan, dtype=np.float32)
            entry.filled = np.zeros(len(boxes), dtype=bool)
        elif classifications.labels != entry.labels:
            self._discard("Discarded classifications of %s frame %d from worker %s: labels %s differ from %s",
                          classifications.source_id, classifications.frame_index, classifications.worker_id,
                          classifications.labels, entry.labels)
            return

        for box, row in zip(classifications.boxes, classifications.probabilities):
            # A box may appear twice in a frame, so each row fills the first matching face still empty.
            matches = np.flatnonzero(np.all(boxes == box, axis=1) & ~entry.filled)
            if len(matches) == 0:
                self._discard("Discarded a classification of %s frame %d from worker %s: box %s is not among "
                              "the frame's unclassified boxes", classifications.source_id,
                              classifications.frame_index, classifications.worker_id, box.tolist())
                continue
            entry.probabilities[matches[0]] = row
            entry.filled[matches[0]] = True

    def _release(self, state: _SourceState, entry: _HeldFrame, now: float) -> JoinedFrame:
        index = heapq.heappop(state.heap)
        del state.frames[index]
        self._held_count -= 1
        state.last_released = index

        timed_out = not entry.complete
        if timed_out:
            missing = len(entry.frame.boxes) - (int(entry.filled.sum()) if entry.filled is not None else 0)
            logger.warning("Released frame %d of %s without classifications for %d of its %d faces after %.2f s",
                           index, entry.frame.source_id, missing, len(entry.frame.boxes), now - entry.arrival)
            self._count_drop(entry.frame.source_id, index, CLASSIFICATION_TIMEOUT)

        probabilities = entry.probabilities
        if probabilities is None:
            probabilities = np.full((len(entry.frame.boxes), 0), np.nan, dtype=np.float32)
        return JoinedFrame(frame=entry.frame, probabilities=probabilities, labels=entry.labels,
                           timed_out=timed_out, released_time=now)

    def _drop_oldest(self) -> None:
        oldest_source, oldest = None, None
        for source_id, state in self._sources.items():
            if state.heap:
                head = state.frames[state.heap[0]]
                if oldest is None or head.arrival < oldest.arrival:
                    oldest_source, oldest = source_id, head
        state = self._sources[oldest_source]
        index = heapq.heappop(state.heap)
        del state.frames[index]
        self._held_count -= 1
        # Later frames must not be overtaken by this one if it reappears.
        state.last_released = max(state.last_released, index)
        logger.warning("Dropped frame %d of %s: %d frames wait for classifications, the maximum "
                       "(raise sink.max_pending_frames if the classifiers only lag)", index, oldest_source,
                       self.max_frames)
        self._count_drop(oldest_source, index, JOINER_FULL)

    def _restart_source(self, source_id: str, state: _SourceState, frame_index: int) -> None:
        """Drop the frames still held from the earlier run of a source and start its order afresh."""
        logger.warning("Source %s started again at frame %d after frame %d; dropping its %d held frames",
                       source_id, frame_index, max(state.last_released, *state.frames, -1), len(state.frames))
        for index in sorted(state.frames):
            self._count_drop(source_id, index, SOURCE_RESTARTED)
        self._held_count -= len(state.frames)
        state.frames.clear()
        state.heap.clear()
        state.last_released = -1
        state.end = None

    def _expire_early(self, now: float) -> None:
        expired = [key for key, (arrival, _) in self._early.items() if now - arrival >= self.timeout_s]
        for key in expired:
            del self._early[key]
            self._discard("Discarded classifications of %s frame %d: the frame did not arrive within %.1f s",
                          *key, self.timeout_s)

    def _count_drop(self, source_id: str, frame_index: int, reason: str) -> None:
        self.dropped[(source_id, reason)] += 1
        if self._on_drop is not None:
            self._on_drop(source_id, frame_index, reason)

    def _discard(self, message: str, *args) -> None:
        self.discarded_classifications += 1
        self._discard_log.warning(message, *args)
