"""The pipeline's work in one process, one frame at a time: read, detect, classify, draw, write.

This is the baseline that the multi-process pipeline is measured against. It
uses the project's own detector, crop and quality screening, the LiteRT model
and the sink's annotator and recorder, with no ZeroMQ in between. The faces of
each frame are classified in one call. Start-up and model loading are not
timed: the clock runs from the first frame read to the last frame written.

Run from the repository root:

    python -m benchmarks.single_process --clip CLIP --record OUT.mp4

It prints one JSON object: frames, faces, seconds, fps and seconds per step.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from classifier.inference import EmotionClassifier
from classifier.labels import EMOTIONS
from common.schema import DetectedFrame, empty_boxes
from detector.detectors import DEFAULT_DETECTOR, create_detector
from detector.quality import QualityConfig, screen_faces
from sink.annotate import Annotator
from sink.joiner import JoinedFrame
from sink.recorder import Recorder

logger = logging.getLogger(__name__)

SOURCE_ID = "source0"
STEPS = ("read", "detect", "classify", "draw", "write")


def box_array(faces: list) -> np.ndarray:
    if not faces:
        return empty_boxes()
    return np.array([[face.box.x, face.box.y, face.box.w, face.box.h] for face in faces], dtype=np.int32)


def annotate(frame_index: int, pixels: np.ndarray, fps: float | None, screened, probabilities: np.ndarray,
             annotator: Annotator) -> np.ndarray:
    """Draw the faces the way the sink does, through the same message types."""
    detected = DetectedFrame(
        source_id=SOURCE_ID, frame_index=frame_index, capture_time=time.time(), timestamps={}, pixels=pixels,
        fps=fps, boxes=box_array(screened.accepted), rejected_boxes=box_array(screened.rejected),
        rejected_reasons=[str(face.reason) for face in screened.rejected],
    )
    joined = JoinedFrame(frame=detected, probabilities=probabilities, labels=list(EMOTIONS), timed_out=False,
                         released_time=time.time())
    return annotator.draw(joined)


def run_loop(clip: Path, record: Path, detector_name: str = DEFAULT_DETECTOR, model: Path | None = None) -> dict:
    """Process every frame of `clip` into `record` and return the frame count, time and time per step."""
    detector = create_detector(detector_name)
    classifier = EmotionClassifier(model, backend="litert")
    annotator = Annotator()
    quality = QualityConfig()
    capture = cv2.VideoCapture(str(clip))
    if not capture.isOpened():
        raise FileNotFoundError(f"failed to open video {clip}: pass an existing video file with --clip")
    fps = capture.get(cv2.CAP_PROP_FPS) or None
    step_seconds = dict.fromkeys(STEPS, 0.0)
    frames = faces = 0
    logger.info("Running the single-process loop on %s with detector %s", clip, detector_name)

    with Recorder(record) as recorder:
        started = time.perf_counter()
        try:
            while True:
                step_started = time.perf_counter()
                ok, pixels = capture.read()
                if not ok:
                    break
                detected = time.perf_counter()
                screened = screen_faces(pixels, detector.detect(pixels), detector_name, quality)
                classified = time.perf_counter()
                crops = [face.crop for face in screened.accepted]
                probabilities = classifier.predict(np.stack(crops)) if crops else np.zeros((0, len(EMOTIONS)))
                drawn = time.perf_counter()
                image = annotate(frames, pixels, fps, screened, probabilities, annotator)
                written = time.perf_counter()
                recorder.write(SOURCE_ID, image, fps)
                finished = time.perf_counter()

                for step, (begin, end) in zip(STEPS, (
                    (step_started, detected), (detected, classified), (classified, drawn), (drawn, written),
                    (written, finished),
                )):
                    step_seconds[step] += end - begin
                frames += 1
                faces += len(crops)
        finally:
            capture.release()
        # Closing the recorder writes the MP4 index, which is part of writing the last frame.
        recorder.close()
        seconds = time.perf_counter() - started

    return {
        "frames": frames, "faces": faces, "seconds": seconds, "fps": frames / seconds if seconds else None,
        "detector": detector_name, "backend": "litert", "step_seconds": step_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, required=True, help="video file to process")
    parser.add_argument("--record", type=Path, required=True, help="annotated video to write (.mp4)")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, help=f"face detector (default: {DEFAULT_DETECTOR})")
    parser.add_argument("--model", type=Path, default=None, help=".tflite model (default: the shipped model)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    print(json.dumps(run_loop(args.clip, args.record, args.detector, args.model)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
