"""FER-2013 framing of face crops, and the quality checks that reject faces."""

import cv2
import numpy as np
import pytest
from matplotlib import cbook
from pydantic import ValidationError

from detector.crops import FER_CROP_SCALE, FRAMINGS, CropRegion, crop_region, cut_crop, framing_for
from detector.detectors import Box, create_detector
from detector.quality import QualityConfig, RejectReason, measure_sharpness, screen_faces

HAAR = FRAMINGS["haar"]
FRAME_SHAPE = (400, 600, 3)

# Haar box around Grace Hopper's face in matplotlib's grace_hopper.jpg, from
# HaarDetector with its defaults.
GRACE_HAAR_BOX = Box(149, 100, 231, 231)


@pytest.fixture(scope="module")
def grace_hopper() -> np.ndarray:
    return cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))


def region_overlap(a: CropRegion, b: CropRegion) -> float:
    inter_w = max(0, min(a.x + a.side, b.x + b.side) - max(a.x, b.x))
    inter_h = max(0, min(a.y + a.side, b.y + b.side) - max(a.y, b.y))
    intersection = inter_w * inter_h
    return intersection / (a.side**2 + b.side**2 - intersection)


# Crop geometry


def test_crop_region_centred_box():
    region = crop_region(Box(250, 150, 100, 100), FRAME_SHAPE, HAAR)

    assert region.side == 104
    assert (region.x, region.y) == (248, 148)
    assert region.outside_fraction == 0.0
    assert not region.clipped


def test_crop_region_keeps_centre_of_odd_box():
    box = Box(301, 77, 151, 151)
    region = crop_region(box, FRAME_SHAPE, HAAR)

    assert region.side == round(151 * FER_CROP_SCALE)
    assert abs(region.x + region.side / 2 - box.centre[0]) <= 0.5
    assert abs(region.y + region.side / 2 - box.centre[1]) <= 0.5


@pytest.mark.parametrize(
    "edge, box",
    [
        ("left", Box(0, 150, 100, 100)),
        ("right", Box(500, 150, 100, 100)),
        ("top", Box(250, 0, 100, 100)),
        ("bottom", Box(250, 300, 100, 100)),
    ],
)
def test_crop_region_at_border_clipped(edge, box):
    region = crop_region(box, FRAME_SHAPE, HAAR)

    # The 104-pixel square sticks out 2 pixels past the edge the box touches.
    assert region.clipped, f"square at the {edge} edge not reported as clipped"
    assert region.outside_fraction == pytest.approx(2 / 104, abs=1e-9)


def test_crop_region_past_corner_clipped():
    region = crop_region(Box(-30, -30, 100, 100), FRAME_SHAPE, HAAR)

    inside = (100 - 28) ** 2  # the 104-pixel square spans -32..72 on both axes
    assert region.outside_fraction == pytest.approx(1 - inside / 104**2)


def test_crop_region_rejects_empty_box():
    with pytest.raises(ValueError, match="positive width and height"):
        crop_region(Box(10, 10, 0, 20), FRAME_SHAPE, HAAR)


def test_framing_for_unknown_detector():
    with pytest.raises(ValueError, match="no crop framing for detector 'yolo'"):
        framing_for("yolo")


@pytest.mark.parametrize("layout", ["gray", "bgr", "bgra", "uint16"])
def test_cut_crop_48x48_uint8(grace_hopper, layout):
    gray = cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY)
    frames = {
        "gray": gray,
        "bgr": grace_hopper,
        "bgra": cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2BGRA),
        "uint16": grace_hopper.astype(np.uint16) * 257,
    }
    region = crop_region(GRACE_HAAR_BOX, grace_hopper.shape, HAAR)

    crop = cut_crop(frames[layout], region)
    reference = cut_crop(gray, region)

    assert crop.shape == (48, 48)
    assert crop.dtype == np.uint8
    assert np.abs(crop.astype(int) - reference.astype(int)).max() <= 1


def test_cut_crop_clipped_region_repeats_edge():
    frame = np.tile(np.arange(100, 200, dtype=np.uint8), (100, 1))  # brightness grows to the right
    region = CropRegion(x=-48, y=26, side=96, outside_fraction=0.5)

    crop = cut_crop(frame, region)

    assert crop.shape == (48, 48)
    # The left half lies outside the frame and repeats its first column (value 100).
    assert np.all(crop[:, :23] == 100)
    assert crop[:, -1].min() > 100


def test_cut_crop_region_outside_frame():
    with pytest.raises(ValueError, match="entirely outside the frame"):
        cut_crop(np.zeros((50, 50), dtype=np.uint8), CropRegion(60, 60, 20, 1.0))


@pytest.mark.parametrize("name", ["blazeface", "blazeface_full"])
def test_framing_matches_haar_crop(grace_hopper, name):
    # The framing correction must turn the backend's box into nearly the crop
    # that the Haar box gives on the same face.
    haar_region = crop_region(GRACE_HAAR_BOX, grace_hopper.shape, HAAR)
    boxes = create_detector(name).detect(grace_hopper)
    assert len(boxes) == 1

    corrected = crop_region(boxes[0], grace_hopper.shape, framing_for(name))
    uncorrected = crop_region(boxes[0], grace_hopper.shape, HAAR)

    assert region_overlap(corrected, haar_region) > 0.85
    assert region_overlap(corrected, haar_region) > region_overlap(uncorrected, haar_region)


# Quality checks


def test_screen_accepts_sharp_central_face(grace_hopper):
    result = screen_faces(grace_hopper, [GRACE_HAAR_BOX], "haar")

    assert result.rejected == []
    assert len(result.accepted) == 1
    face = result.accepted[0]
    assert face.box == GRACE_HAAR_BOX
    assert face.crop.shape == (48, 48)
    assert face.crop.dtype == np.uint8
    assert face.sharpness >= QualityConfig().min_sharpness


def test_screen_rejects_small_face(grace_hopper):
    small = cv2.resize(grace_hopper, None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA)
    box = Box(15, 10, 23, 23)

    result = screen_faces(small, [box], "haar")

    assert result.accepted == []
    assert [(face.reason, face.value) for face in result.rejected] == [(RejectReason.TOO_SMALL, 23.0)]


def test_screen_min_face_side_uses_framing_scale(grace_hopper):
    # A BlazeFace box is smaller than the Haar box around the same face, so its
    # side is scaled to the Haar side before the size check.
    side = QualityConfig().min_face_side / FRAMINGS["blazeface"].scale + 1
    box = Box(200, 200, round(side), round(side), 0.9)

    result = screen_faces(grace_hopper, [box], "blazeface")

    assert all(face.reason != RejectReason.TOO_SMALL for face in result.rejected)


def test_screen_rejects_clipped_face(grace_hopper):
    # Cut the frame through the middle of the face: the crop square leaves the frame.
    cut = grace_hopper[:, :260]
    result = screen_faces(cut, [GRACE_HAAR_BOX], "haar")

    assert result.accepted == []
    assert len(result.rejected) == 1
    assert result.rejected[0].reason == RejectReason.CLIPPED
    assert result.rejected[0].value > QualityConfig().max_outside_fraction


def test_screen_accepts_slightly_clipped_face(grace_hopper):
    box = Box(0, 100, 231, 231)  # the crop sticks out 4 of its 240 pixels on the left

    result = screen_faces(grace_hopper, [box], "haar")

    assert len(result.accepted) == 1
    assert result.accepted[0].region.clipped


def test_screen_rejects_blurred_face(grace_hopper):
    blurred = cv2.GaussianBlur(grace_hopper, (0, 0), 12)

    result = screen_faces(blurred, [GRACE_HAAR_BOX], "haar")

    assert result.accepted == []
    assert len(result.rejected) == 1
    assert result.rejected[0].reason == RejectReason.BLURRED
    assert result.rejected[0].value < QualityConfig().min_sharpness


def test_screen_mixed_faces_keep_order(grace_hopper):
    boxes = [Box(5, 5, 20, 20), GRACE_HAAR_BOX, Box(450, 500, 100, 100)]

    result = screen_faces(grace_hopper, boxes, "haar")

    assert [face.box for face in result.accepted] == [GRACE_HAAR_BOX]
    assert [(face.box, face.reason) for face in result.rejected] == [
        (boxes[0], RejectReason.TOO_SMALL),
        (boxes[2], RejectReason.CLIPPED),
    ]


def test_measure_sharpness_orders_blur(grace_hopper):
    region = crop_region(GRACE_HAAR_BOX, grace_hopper.shape, HAAR)
    crop = cut_crop(grace_hopper, region)

    values = [measure_sharpness(cv2.GaussianBlur(crop, (0, 0), sigma)) for sigma in (0.5, 1.0, 2.0)]

    assert values[0] > values[1] > values[2]
    assert measure_sharpness(np.full((48, 48), 128, dtype=np.uint8)) == 0.0


def test_quality_config_rejects_bad_values():
    with pytest.raises(ValidationError, match="max_outside_fraction"):
        QualityConfig(max_outside_fraction=1.5)
    with pytest.raises(ValidationError, match="min_sharpnes"):
        QualityConfig(min_sharpnes=10)
