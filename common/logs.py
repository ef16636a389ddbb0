"""Logging setup shared by every process: one format that names the stage and source."""

import logging
import threading
import time
from collections.abc import Callable

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(stage)s%(source_suffix)s] %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class StageContext(logging.Filter):
    """Stamp every record with the stage and source of this process."""

    def __init__(self, stage: str, source: str | None):
        super().__init__()
        self.stage = stage
        self.source_suffix = f" {source}" if source else ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.stage = self.stage
        record.source_suffix = self.source_suffix
        return True


def setup_logging(stage: str, level: str = "INFO", source: str | None = None) -> None:
    """Send log lines of all loggers to stderr, each naming `stage` and `source`."""
    handler = logging.StreamHandler()
    handler.addFilter(StageContext(stage, source))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))

    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


class RateLimitedLog:
    """Log repeated errors without flooding: the first `burst` lines, then at most one per `interval_s`.

    A line written after a quiet period carries the number of lines suppressed since the
    last one written, so a burst of bad input is still visible in the count.
    """

    def __init__(self, logger: logging.Logger, *, burst: int = 5, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        if burst < 0:
            raise ValueError(f"burst must be at least 0, got {burst}")
        if interval_s <= 0:
            raise ValueError(f"interval_s must be above 0 seconds, got {interval_s}")
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._written = 0
        self._suppressed = 0
        self._last_written: float | None = None
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Write the line unless the rate limit suppresses it, and return whether it was written."""
        with self._lock:
            now = self._clock()
            in_burst = self._written < self.burst
            interval_passed = self._last_written is None or now - self._last_written >= self.interval_s
            if not (in_burst or interval_passed):
                self._suppressed += 1
                return False
            suppressed, self._suppressed = self._suppressed, 0
            self._written += 1
            self._last_written = now

        if suppressed:
            msg = msg + " (%d similar lines suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, msg, *args)
