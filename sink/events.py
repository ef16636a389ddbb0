"""Write one JSON line per face per released frame."""

import json
import logging
import math
import time
from pathlib import Path

from sink.joiner import JoinedFrame

logger = logging.getLogger(__name__)


class EventWriter:
    """Write face events to a JSON lines file, flushed within `flush_interval_s` of being written.

    The interval is kept as long as the owner calls `write()` or `flush_if_due()` regularly.

    Each line contains `source`, `frame_index`, `capture_time` (Unix seconds), `box`
    ([x, y, w, h] in pixels), `emotion` (the top label), `probabilities` (label to
    probability), `latency_ms` (from capture reading the frame to the sink
    releasing it) and `status`. The status is `classified`, `classification_timeout` (no
    result arrived in time) or the reason the detector did not classify the face
    (`too_small`, `clipped`, `blurred`). A face that was not classified has null
    `emotion` and `probabilities`. Frames without faces write no line. The file
    is replaced when the writer opens it.
    """

    def __init__(self, path: Path, *, flush_interval_s: float = 1.0):
        if flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be at least 0 seconds, got {flush_interval_s}")
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self.lines_written = 0
        try:
            self._file = open(self.path, "w", encoding="utf-8")
        except OSError as error:
            raise OSError(f"Cannot write events to {self.path}: {error.strerror}. Check that the folder exists "
                          "and is writable.") from error
        self._last_flush = time.monotonic()
        self._unflushed = False
        logger.info("Writing events to %s", self.path)

    def write(self, joined: JoinedFrame) -> int:
        """Write one line per face of `joined`, classified or not, and return the number of lines."""
        frame = joined.frame
        latency_ms = round((joined.released_time - frame.capture_time) * 1000, 2)

        def event(box, status: str) -> dict:
            return {
                "source": frame.source_id,
                "frame_index": frame.frame_index,
                "capture_time": frame.capture_time,
                "box": [int(value) for value in box],
                "emotion": None,
                "probabilities": None,
                "latency_ms": latency_ms,
                "status": status,
            }

        for face, box in enumerate(frame.boxes):
            if joined.classified(face):
                line = event(box, "classified")
                probabilities = joined.probabilities[face]
                line["emotion"] = joined.labels[int(probabilities.argmax())]
                line["probabilities"] = {
                    label: round(float(value), 6) for label, value in zip(joined.labels, probabilities)
                    if math.isfinite(value)
                }
            else:
                line = event(box, "classification_timeout")
            self._file.write(json.dumps(line) + "\n")

        for box, reason in zip(frame.rejected_boxes, frame.rejected_reasons):
            self._file.write(json.dumps(event(box, reason)) + "\n")

        lines = len(frame.boxes) + len(frame.rejected_boxes)
        self.lines_written += lines
        self._unflushed = self._unflushed or bool(lines)
        self.flush_if_due()
        return lines

    def flush_if_due(self) -> None:
        """Flush unflushed lines once `flush_interval_s` has passed since the last flush; call it regularly."""
        if self._unflushed and time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._last_flush = time.monotonic()
        self._unflushed = False

    def close(self) -> None:
        """Flush and close the file. Safe to call twice."""
        if self._file.closed:
            return
        self._file.close()
        logger.info("Closed events file %s after %d lines", self.path, self.lines_written)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
