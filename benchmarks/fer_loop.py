"""The `fer` package's own per-frame loop, as a peer of the pipeline: detect, classify, draw, write.

Runs in a virtual environment that has `fer`, not in the project's, and
imports nothing from the project. `FER(mtcnn=False)` is the package's default
set-up: OpenCV's Haar cascade for faces and its quantized TFLite emotion model.
Start-up and model loading are not timed: the clock runs from the first frame
read to the last frame written.

    /root/bench-envs/fer/bin/python benchmarks/fer_loop.py --clip CLIP --record OUT.mp4

It prints one JSON object: frames, faces, seconds, fps, seconds per step and the fer version.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2

logger = logging.getLogger("benchmarks.fer_loop")

STEPS = ("read", "detect_and_classify", "draw", "write")
BOX_COLOR = (0, 210, 255)


def load_fer():
    """Return the FER class, which fer 25.10.3 does not export from the package root."""
    try:
        from fer import FER
    except ImportError:
        from fer.fer import FER
    return FER


def draw_faces(image, faces: list[dict]) -> None:
    for face in faces:
        x, y, width, height = (int(value) for value in face["box"])
        emotion, score = max(face["emotions"].items(), key=lambda item: item[1])
        cv2.rectangle(image, (x, y), (x + width, y + height), BOX_COLOR, 2, cv2.LINE_AA)
        cv2.putText(image, f"{emotion} {score:.0%}", (x, max(y - 8, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                    BOX_COLOR, 2, cv2.LINE_AA)


def run_loop(clip: Path, record: Path) -> dict:
    import fer

    detector = load_fer()(mtcnn=False)
    capture = cv2.VideoCapture(str(clip))
    if not capture.isOpened():
        raise FileNotFoundError(f"failed to open video {clip}: pass an existing video file with --clip")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(record), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        capture.release()
        raise OSError(f"OpenCV cannot create the video {record}: check that its folder exists and is writable")

    step_seconds = dict.fromkeys(STEPS, 0.0)
    frames = faces = 0
    started = time.perf_counter()
    try:
        while True:
            step_started = time.perf_counter()
            ok, image = capture.read()
            if not ok:
                break
            read = time.perf_counter()
            found = detector.detect_emotions(image)
            classified = time.perf_counter()
            draw_faces(image, found)
            drawn = time.perf_counter()
            writer.write(image)
            written = time.perf_counter()

            step_seconds["read"] += read - step_started
            step_seconds["detect_and_classify"] += classified - read
            step_seconds["draw"] += drawn - classified
            step_seconds["write"] += written - drawn
            frames += 1
            faces += len(found)
    finally:
        capture.release()
        writer.release()
    seconds = time.perf_counter() - started
    return {"frames": frames, "faces": faces, "seconds": seconds, "fps": frames / seconds if seconds else None,
            "step_seconds": step_seconds, "fer_version": fer.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, required=True, help="video file to process")
    parser.add_argument("--record", type=Path, required=True, help="annotated video to write (.mp4)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    print(json.dumps(run_loop(args.clip, args.record)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
