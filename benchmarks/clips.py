"""Benchmark clips built with ffmpeg from the real phone clip, cached outside the repository.

- The four-face clip tiles the 596x336 clip 2x2 into 1280x720, each tile scaled
  to 640x360 and the right-hand tiles mirrored, so every frame contains four faces
  about 134 px wide.
- The one-face clip is the phone clip itself, looped, at its 25 fps.

Both are H.264 and are looped with `-stream_loop` to the requested frame count.
"""

import logging
import shutil
import subprocess
import time
from pathlib import Path

import cv2

logger = logging.getLogger(__name__)

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
PHONE_CLIP = SHARED_DIR / "media" / "street_phone_596x336.mp4"
FRAME_RATE = 25
FFMPEG_TIMEOUT_S = 300

TILE_FILTER = (
    "[0:v]scale=640:360,split=4[top_left][top_right_source][bottom_left][bottom_right_source];"
    "[top_right_source]hflip[top_right];[bottom_right_source]hflip[bottom_right];"
    "[top_left][top_right][bottom_left][bottom_right]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0[tiled]"
)


class ClipError(RuntimeError):
    """A benchmark clip that cannot be built or read."""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "emotion-pipeline" / "bench"


def require_ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise ClipError("ffmpeg not found on PATH: install it (e.g. `apt-get install ffmpeg`) to build the "
                        "benchmark clips")
    return path


def require_phone_clip(source: Path = PHONE_CLIP) -> Path:
    if not source.is_file():
        raise ClipError(f"source clip {source} not found: put the shared media folder beside the checkout, or "
                        "pass a video with one frontal face per frame as --source-clip")
    return source


def build_four_face_clip(cache_dir: Path, frames: int, source: Path = PHONE_CLIP) -> Path:
    """Return a 1280x720 clip of `frames` frames with four faces each, building it on the first call."""
    path = cache_dir / f"{source.stem}_four_faces_1280x720_{frames}f.mp4"
    filters = ["-filter_complex", TILE_FILTER, "-map", "[tiled]"]
    return build_clip(path, source, frames, filters)


def build_one_face_clip(cache_dir: Path, frames: int, source: Path = PHONE_CLIP) -> Path:
    """Return the source clip looped to `frames` frames at 25 fps, building it on the first call."""
    path = cache_dir / f"{source.stem}_looped_{frames}f.mp4"
    return build_clip(path, source, frames, [])


def build_clip(path: Path, source: Path, frames: int, filters: list[str]) -> Path:
    if frames < 1:
        raise ValueError(f"expected a clip of at least 1 frame, got {frames}")
    if path.is_file() and count_frames(path) == frames:
        logger.info("Using cached clip %s", path)
        return path

    require_phone_clip(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    loops = -(-frames // count_frames(source)) - 1
    partial = path.with_suffix(".partial.mp4")
    command = [
        require_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
        "-stream_loop", str(loops), "-i", str(source), *filters,
        "-frames:v", str(frames), "-r", str(FRAME_RATE),
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-an", str(partial),
    ]
    logger.info("Building %s (%d frames) with ffmpeg", path, frames)
    started = time.monotonic()
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S)
    except subprocess.CalledProcessError as error:
        raise ClipError(f"ffmpeg failed to build {path} (exit status {error.returncode}): "
                        f"{error.stderr.strip()[-2000:]}") from error
    except subprocess.TimeoutExpired as error:
        raise ClipError(f"ffmpeg did not build {path} within {FFMPEG_TIMEOUT_S} s") from error

    built = count_frames(partial)
    if built != frames:
        raise ClipError(f"ffmpeg wrote {built} frames to {partial}, expected {frames}")
    partial.replace(path)
    logger.info("Built %s in %.1f s", path, time.monotonic() - started)
    return path


def count_frames(path: Path) -> int:
    """Count the frames of a video by decoding it, with ffprobe where it is installed, else OpenCV."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is not None:
        result = subprocess.run(
            [ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
             "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
            capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S,
        )
        if result.returncode == 0 and result.stdout.strip().isdigit():
            return int(result.stdout.strip())
        logger.warning("ffprobe could not count the frames of %s (%s); decoding with OpenCV",
                       path, result.stderr.strip()[-300:])
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ClipError(f"failed to open video {path}")
    try:
        frames = 0
        while capture.grab():
            frames += 1
        return frames
    finally:
        capture.release()
