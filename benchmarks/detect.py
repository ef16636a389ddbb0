"""Face detection time per frame for each detector, at 640x360, 1280x720 and 1920x1080.

The timing itself is `benchmarks.detectors.time_detector`, run on frames of the
real phone clip resized to each size.
"""

import logging

from benchmarks.clips import PHONE_CLIP, require_phone_clip
from benchmarks.detectors import TIMING_SIZES, read_clip, time_detector
from benchmarks.report import format_number, markdown_table
from detector.detectors import DETECTOR_NAMES, create_detector

logger = logging.getLogger(__name__)


def run_detect(repeats: int, quick: bool) -> dict:
    """Time every detector on every 12th clip frame (every 40th with `quick`) at each size."""
    frames = read_clip(require_phone_clip(PHONE_CLIP))[::40 if quick else 12]
    results = {}
    for index, name in enumerate(DETECTOR_NAMES, start=1):
        logger.info("Timing detector %s (%d of %d) on %d frames, %d passes per size",
                    name, index, len(DETECTOR_NAMES), len(frames), repeats)
        results[name] = time_detector(create_detector(name), frames, repeats)
    return {"frames": len(frames), "source": str(PHONE_CLIP), "detectors": results}


def format_detect(result: dict) -> str:
    sizes = [f"{width}x{height}" for width, height in TIMING_SIZES]
    rows = [
        (name, *(f"{format_number(timing[size]['median_ms'])} ({format_number(timing[size]['p90_ms'])})"
                 for size in sizes))
        for name, timing in result["detectors"].items()
    ]
    table = markdown_table(("detector", *(f"{size} ms" for size in sizes)), rows)
    return (f"Median (90th percentile) time per frame, {result['frames']} clip frames resized to each size.\n\n"
            f"{table}")
