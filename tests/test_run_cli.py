import subprocess
import sys
from pathlib import Path

from sink.cli import part_path


def test_record_in_missing_folder_rejected_before_start(tmp_path):
    missing = tmp_path / "no" / "such" / "out.mp4"

    result = subprocess.run(
        [sys.executable, "-m", "common.cli", "run", "--record", str(missing), "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 2
    assert f"sink.record: the folder {missing.parent} does not exist" in result.stderr
    assert not (tmp_path / "run").exists(), "no stage should have been started"


def test_validate_config_starts_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "common.cli", "run", "--validate-config", "--workers", "3",
         "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "workers = 3" in result.stdout
    assert not (tmp_path / "run").exists()


def test_restarted_sink_writes_part_files():
    assert part_path(Path("/out/demo.mp4"), 1) == Path("/out/demo.part1.mp4")
    assert part_path(Path("events.jsonl"), 2) == Path("events.part2.jsonl")
    assert part_path(None, 1) is None
