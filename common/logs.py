"""Logging setup shared by every process: one format that names the stage and source."""

import logging

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
