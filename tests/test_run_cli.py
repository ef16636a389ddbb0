import subprocess
import sys
from pathlib import Path

import pytest

from common.run_cli import written_parts
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


def run_command(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common.cli", "run", *options], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


@pytest.mark.parametrize(("options", "message"), [
    (("--source", "clip.mp4", "--record", "clip.mp4"), "sink.record: {tmp}/clip.mp4 is the source"),
    (("--source", "clip.mp4", "--events", "clip.mp4"), "sink.events: {tmp}/clip.mp4 is the source"),
    (("--record", "out.mp4", "--events", "out.mp4"), "sink.record and sink.events are the same file"),
    (("--record", "folder"), "sink.record: {tmp}/folder is a folder"),
])
def test_unusable_outputs_rejected_before_start(tmp_path, options, message):
    (tmp_path / "clip.mp4").write_bytes(b"the source must survive")
    (tmp_path / "folder").mkdir()

    result = run_command(tmp_path, *options, "--run-dir", str(tmp_path / "run"))

    assert result.returncode == 2
    assert message.format(tmp=tmp_path) in result.stderr
    assert (tmp_path / "clip.mp4").read_bytes() == b"the source must survive"
    assert not (tmp_path / "run").exists(), "no stage should have been started"


def test_run_dir_that_is_a_file_rejected(tmp_path):
    (tmp_path / "taken").write_text("a file")

    result = run_command(tmp_path, "--run-dir", "taken")

    assert result.returncode == 2
    assert "--run-dir taken is a file" in result.stderr


def test_written_parts_lists_restart_parts(tmp_path):
    for name in ("out.mp4", "out.part2.mp4", "out.part1.mp4", "out.partial.mp4", "other.part1.mp4"):
        (tmp_path / name).write_bytes(b"")

    assert written_parts(tmp_path / "out.mp4") == [tmp_path / name for name in
                                                    ("out.mp4", "out.part1.mp4", "out.part2.mp4")]
    assert written_parts(tmp_path / "missing.mp4") == []
