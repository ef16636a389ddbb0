"""Face detector backends on real images: a portrait, a face-free photo and a real clip."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib import cbook

from detector.detectors import DEFAULT_DETECTOR, DETECTOR_NAMES, Box, FaceDetector, create_detector
from detector.haar import CascadeNotFoundError, find_cascade

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STREET_CLIP = SHARED / "media" / "street_phone_596x336.mp4"

# Grace Hopper's face from brow to chin in matplotlib's grace_hopper.jpg (512x600),
# checked by eye on a saved crop: (x, y, side).
GRACE_FACE = (160, 130, 210)


def overlap(box: Box, square: tuple[int, int, int]) -> float:
    """Intersection over union of a box and an (x, y, side) square."""
    x, y, side = square
    inter_w = max(0, min(box.x + box.w, x + side) - max(box.x, x))
    inter_h = max(0, min(box.y + box.h, y + side) - max(box.y, y))
    intersection = inter_w * inter_h
    return intersection / (box.w * box.h + side * side - intersection)


@pytest.fixture(scope="module")
def grace_hopper() -> np.ndarray:
    return cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))


@pytest.fixture(scope="module", params=DETECTOR_NAMES)
def detector(request) -> FaceDetector:
    return create_detector(request.param)


def test_detector_finds_grace_hopper(detector, grace_hopper):
    boxes = detector.detect(grace_hopper)

    assert len(boxes) == 1, f"{detector.name} found {len(boxes)} faces: {boxes}"
    assert overlap(boxes[0], GRACE_FACE) > 0.6, f"{detector.name} box {boxes[0]} misses the face"


def test_detector_face_free_photo(detector):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (test extra) is not installed")
    rocket = cv2.cvtColor(skimage_data.rocket(), cv2.COLOR_RGB2BGR)

    assert detector.detect(rocket) == []


@pytest.mark.parametrize("layout", ["gray", "gray_1_channel", "bgra", "uint16"])
def test_detector_frame_layouts(detector, grace_hopper, layout):
    gray = cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY)
    frames = {
        "gray": gray,
        "gray_1_channel": gray[:, :, np.newaxis],
        "bgra": cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2BGRA),
        "uint16": grace_hopper.astype(np.uint16) * 257,
    }

    boxes = detector.detect(frames[layout])

    assert len(boxes) == 1, f"{detector.name} found {len(boxes)} faces in a {layout} frame"
    assert overlap(boxes[0], GRACE_FACE) > 0.6


def test_detector_boxes_in_frame_pixels(detector, grace_hopper):
    # A frame widened by a border must give the same face box, moved by the border.
    # This catches boxes left in the detector's own input coordinates.
    left, top = 300, 80
    framed = cv2.copyMakeBorder(grace_hopper, top, 0, left, 0, cv2.BORDER_CONSTANT, value=(90, 90, 90))

    plain = detector.detect(grace_hopper)
    shifted = detector.detect(framed)

    assert len(plain) == 1
    assert len(shifted) == 1
    # Haar's pyramid steps by 10% in scale, and the border changes which step fits best.
    tolerance = 0.15 * plain[0].w
    assert abs(shifted[0].x - left - plain[0].x) <= tolerance
    assert abs(shifted[0].y - top - plain[0].y) <= tolerance
    assert abs(shifted[0].w - plain[0].w) <= tolerance


def test_detector_rejects_float_frame(detector):
    with pytest.raises(ValueError, match="uint8 or uint16"):
        detector.detect(np.zeros((100, 100, 3), dtype=np.float32))


def test_detector_rejects_two_channels(detector):
    with pytest.raises(ValueError, match="gray, BGR or BGRA"):
        detector.detect(np.zeros((100, 100, 2), dtype=np.uint8))


def test_blazeface_scores_in_unit_range(grace_hopper):
    for name in ("blazeface", "blazeface_full"):
        boxes = create_detector(name).detect(grace_hopper)
        assert boxes and all(0.5 <= box.score <= 1.0 for box in boxes), f"{name} scores: {boxes}"


def test_create_detector_unknown_name():
    with pytest.raises(ValueError, match="unknown face detector 'yolo': expected one of haar, blazeface"):
        create_detector("yolo")


def test_create_detector_invalid_options():
    with pytest.raises(ValueError, match="scale_factor must be greater than 1.0"):
        create_detector("haar", scale_factor=1.0)
    with pytest.raises(ValueError, match="min_score must be between 0 and 1"):
        create_detector("blazeface", min_score=1.5)


def test_find_cascade_missing_file_names_folders():
    with pytest.raises(CascadeNotFoundError, match="no_such_cascade.xml not found in .*haarcascades"):
        find_cascade("no_such_cascade.xml")


def test_default_detector_on_street_clip():
    if not STREET_CLIP.is_file():
        pytest.skip(f"the shared street clip is not at {STREET_CLIP}")
    detector = create_detector(DEFAULT_DETECTOR)
    capture = cv2.VideoCapture(str(STREET_CLIP))
    frames_with_face = extra_boxes = frame_count = 0
    try:
        while frame_count < 200:
            ok, frame = capture.read()
            if not ok:
                break
            boxes = detector.detect(frame)
            frame_count += 1
            frames_with_face += bool(boxes)
            extra_boxes += max(0, len(boxes) - 1)
    finally:
        capture.release()

    # The clip has one face in each of its 115 frames. Both BlazeFace models found
    # it in all 115 with no extra box (benchmarks/detectors.py).
    assert frame_count == 115
    assert frames_with_face >= 105, f"face found in only {frames_with_face} of 115 frames"
    assert extra_boxes <= 5, f"{extra_boxes} extra boxes in 115 single-face frames"
