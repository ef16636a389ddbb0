"""Machine description and markdown tables shared by the benchmark parts."""

import importlib.metadata
import logging
import os
import platform
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGES = {"tensorflow": "tensorflow", "litert": "ai-edge-litert", "opencv": "opencv-contrib-python"}


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Return the CPU's model name from /proc/cpuinfo, or platform's guess where that file is missing."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError as error:
        logger.warning("Failed to read %s: %s", cpuinfo, error)
    return platform.processor() or "unknown CPU"


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_machine() -> dict:
    """Return the CPU model, usable cores, load average and the versions of Python and the inference libraries."""
    machine = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
    }
    machine |= {key: package_version(name) for key, name in PACKAGES.items()}
    return machine


def machine_line(machine: dict) -> str:
    return (
        f"{machine['cpu']}, {machine['cores']} cores (load average {machine['load_average_1min']:.1f} at start), "
        f"Python {machine['python']}, TensorFlow {machine['tensorflow']}, LiteRT {machine['litert']}, "
        f"OpenCV {machine['opencv']}"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as a markdown table with the first column left-aligned and the others right-aligned."""
    align = ["---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def format_number(value: float | None, digits: int = 1) -> str:
    """Format a measured value with thousands separators, or an en dash where it was not measured."""
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator
