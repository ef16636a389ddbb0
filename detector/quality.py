"""Checks that decide which detected faces are worth classifying.

`screen_faces` cuts a FER-2013-framed crop for every box and sorts the faces
into accepted crops and rejected boxes, each rejected box with one reason:

- `too_small`: the face box is smaller than `min_face_side`.
- `clipped`: more than `max_outside_fraction` of the crop square lies outside the frame.
- `blurred`: the variance of the Laplacian of the 48x48 crop is below `min_sharpness`.
"""

import logging
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from detector.crops import CropRegion, crop_region, cut_crop, framing_for
from detector.detectors import Box

logger = logging.getLogger(__name__)


class RejectReason(StrEnum):
    TOO_SMALL = "too_small"
    CLIPPED = "clipped"
    BLURRED = "blurred"


class QualityConfig(BaseModel):
    """Limits a face must meet to be classified."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # NOTE: the defaults of 40 px and 5% are judgment calls, not yet measured
    # against the classifier's accuracy on small or clipped faces.
    min_face_side: float = Field(
        default=40.0, ge=1.0, le=4096.0,
        description="minimum face size in pixels, as the side of the Haar box that the "
        "detector's box maps to. Smaller faces are upscaled to 48x48 and lose detail",
    )
    max_outside_fraction: float = Field(
        default=0.05, ge=0.0, lt=1.0,
        description="maximum share of the crop square's area that may lie outside the "
        "frame. Those pixels are filled by repeating the frame's edge",
    )
    # Calibrated with benchmarks/detectors.py. Sharp faces score far above 60: the
    # 1st percentile of 2000 FER-2013 PrivateTest faces is 1792, and that of the
    # BlazeFace full-range crops of a real night-time phone clip is 402. A
    # Gaussian blur of sigma 1.5 keeps expressions legible and scores a median
    # of 98 (10th percentile 62). Sigma 2 mostly erases them and scores a median
    # of 41 (95th percentile 67).
    min_sharpness: float = Field(
        default=60.0, ge=0.0,
        description="minimum variance of the Laplacian of the 48x48 gray crop. Lower "
        "values mean blurred faces",
    )


@dataclass(frozen=True)
class FaceCrop:
    """A face accepted for classification."""

    box: Box
    region: CropRegion
    crop: np.ndarray  # uint8, shape (48, 48)
    sharpness: float


@dataclass(frozen=True)
class RejectedFace:
    """A detected face that is not classified, and the measured value that failed."""

    box: Box
    reason: RejectReason
    value: float


@dataclass(frozen=True)
class ScreenedFaces:
    accepted: list[FaceCrop]
    rejected: list[RejectedFace]


def measure_sharpness(crop: np.ndarray) -> float:
    """Return the variance of the Laplacian of a gray crop: low values mean few edges."""
    return float(cv2.Laplacian(crop, cv2.CV_64F).var())


def screen_faces(
    frame: np.ndarray, boxes: list[Box], detector_name: str, config: QualityConfig | None = None
) -> ScreenedFaces:
    """Cut a crop for each box found by detector `detector_name` and apply the quality checks.

    Checks run in the order too_small, clipped, blurred, and a face is rejected for
    the first check it fails. Accepted crops keep the order of `boxes`.
    """
    config = config if config is not None else QualityConfig()
    framing = framing_for(detector_name)
    accepted: list[FaceCrop] = []
    rejected: list[RejectedFace] = []

    for box in boxes:
        face_side = box.side * framing.scale
        if face_side < config.min_face_side:
            rejected.append(RejectedFace(box, RejectReason.TOO_SMALL, face_side))
            continue

        region = crop_region(box, frame.shape, framing)
        if region.outside_fraction > config.max_outside_fraction:
            rejected.append(RejectedFace(box, RejectReason.CLIPPED, region.outside_fraction))
            continue

        crop = cut_crop(frame, region)
        sharpness = measure_sharpness(crop)
        if sharpness < config.min_sharpness:
            rejected.append(RejectedFace(box, RejectReason.BLURRED, sharpness))
            continue
        accepted.append(FaceCrop(box, region, crop, sharpness))
    return ScreenedFaces(accepted, rejected)
