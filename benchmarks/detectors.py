"""Measure the face detector backends on real faces and face-free images.

Each backend runs on a real phone clip, two portraits, FER-2013 faces pasted
into larger frames, the clip resized to several face sizes, and face-free
images, which gives its recall and false positives. Its median time per frame
is measured at 640x360, 1280x720 and 1920x1080. Its boxes are compared with
Haar boxes on the same faces, which gives `detector.crops.FRAMINGS`. Crop
sharpness on FER-2013 faces, blurred copies of them and the clip's faces gives
`detector.quality.QualityConfig.min_sharpness`.

Run from the repository root; needs the test extra (scikit-image):

    python benchmarks/detectors.py --json detectors.json

Results are medians. They depend on the CPU and on whatever else runs on it.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detector.crops import FRAMINGS, crop_region, cut_crop
from detector.detectors import DEFAULT_DETECTOR, DETECTOR_NAMES, Box, FaceDetector, create_detector
from detector.quality import QualityConfig, measure_sharpness

logger = logging.getLogger("benchmarks.detectors")

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
CLIP_PATH = SHARED_DIR / "media" / "street_phone_596x336.mp4"
FER_DIR = SHARED_DIR / "datasets" / "fer2013"

# Face regions checked by eye on the images: (x, y, side) of a square from brow to chin.
PORTRAIT_FACES = {
    "grace_hopper": (160, 130, 210),
    "astronaut": (176, 76, 96),
}
# scikit-image sample images with no human face. chelsea is a cat's face.
FACE_FREE_IMAGES = (
    "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "coins", "moon",
    "page", "text", "clock", "hubble_deep_field", "immunohistochemistry",
)
TIMING_SIZES = ((640, 360), (1280, 720), (1920, 1080))
FACE_SIZE_SCALES = (2.0, 1.5, 1.0, 0.75, 0.5)
# Regions (x, y, width, height) of the clip's 596x336 frames around the face, which
# is about 125 px wide: upscaled to 1280x720, the face spans 42% and 56% of the
# width. The 56% region cuts off the chin in some frames.
CLOSE_UP_REGIONS = {"closeup_42pct": (186, 0, 298, 168), "closeup_56pct": (260, 0, 224, 126)}
MATCH_IOU = 0.3


@dataclass
class LabelledImage:
    """An image and the square face region it contains, or None for a face-free image."""

    name: str
    image: np.ndarray
    face: tuple[int, int, int] | None


def iou(box: Box, square: tuple[int, int, int] | Box) -> float:
    """Intersection over union of a box and an (x, y, side) square or another box."""
    if isinstance(square, Box):
        x, y, w, h = square.x, square.y, square.w, square.h
    else:
        x, y, w = square
        h = w
    inter_w = max(0, min(box.x + box.w, x + w) - max(box.x, x))
    inter_h = max(0, min(box.y + box.h, y + h) - max(box.y, y))
    intersection = inter_w * inter_h
    return intersection / (box.w * box.h + w * h - intersection)


def best_match(boxes: list[Box], target: tuple[int, int, int] | Box) -> Box | None:
    """Return the box that overlaps `target` most, if its IoU reaches MATCH_IOU."""
    scored = [(iou(box, target), box) for box in boxes]
    scored = [item for item in scored if item[0] >= MATCH_IOU]
    return max(scored, key=lambda item: item[0])[1] if scored else None


def read_clip(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"failed to open video {path}: pass an existing video file with --clip")
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    logger.info("Read %d frames from %s", len(frames), path)
    return frames


def load_portraits() -> list[LabelledImage]:
    import skimage.data
    from matplotlib import cbook

    grace = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    return [
        LabelledImage("grace_hopper", grace, PORTRAIT_FACES["grace_hopper"]),
        LabelledImage("astronaut", astronaut, PORTRAIT_FACES["astronaut"]),
    ]


def load_face_free_images() -> list[LabelledImage]:
    import skimage.data

    images = []
    for name in FACE_FREE_IMAGES:
        image = getattr(skimage.data, name)()
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        images.append(LabelledImage(name, image, None))
    return images


def list_fer_faces(fer_dir: Path, prefix: str) -> list[Path]:
    paths = sorted((fer_dir / "test").glob(f"*/{prefix}_*.jpg"))
    if not paths:
        raise FileNotFoundError(
            f"no {prefix} faces found under {fer_dir / 'test'}: pass the FER-2013 "
            "image-folder release with --fer-dir"
        )
    return paths


def textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random gray texture: blurred noise with edges at several scales."""
    coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1), dtype=np.uint8)
    fine = rng.normal(0, 12, (height, width))
    base = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    return np.clip(base + fine, 0, 255).astype(np.uint8)


def paste_fer_faces(fer_dir: Path, count: int, seed: int) -> list[LabelledImage]:
    """Paste `count` PublicTest faces, upscaled to 120-200 px, into 400x320 gray frames.

    Even-numbered frames have a plain mid-gray background and odd-numbered ones a
    random texture. The face's square is the ground truth.
    """
    rng = np.random.default_rng(seed)
    paths = list_fer_faces(fer_dir, "PublicTest")
    chosen = rng.choice(len(paths), size=min(count, len(paths)), replace=False)
    images = []
    for index, path_index in enumerate(sorted(chosen)):
        face = cv2.imread(str(paths[path_index]), cv2.IMREAD_GRAYSCALE)
        side = int(rng.integers(120, 201))
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        if index % 2 == 0:
            frame = np.full((320, 400), 128, dtype=np.uint8)
        else:
            frame = textured_background(rng, 320, 400)
        x = int(rng.integers(0, 400 - side + 1))
        y = int(rng.integers(0, 320 - side + 1))
        frame[y:y + side, x:x + side] = face
        images.append(LabelledImage(paths[path_index].name, frame, (x, y, side)))
    logger.info("Pasted %d FER-2013 faces from %s", len(images), fer_dir)
    return images


def rescale_into_frames(frames: list[np.ndarray], scales: tuple[float, ...]) -> dict[str, list[np.ndarray]]:
    """Resize frames by each scale and centre them in mid-gray 1280x720 frames.

    The clip's face, about 125 px wide, becomes about 125 * scale px wide, while
    the frame stays 1280x720 as a camera stream would. Close-ups of the regions
    in CLOSE_UP_REGIONS are added for faces that fill half the frame.
    """
    sets = {}
    for scale in scales:
        resized_frames = []
        for frame in frames:
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            resized = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=interpolation)
            canvas = np.full((720, 1280, 3), 128, dtype=np.uint8)
            top, left = (720 - resized.shape[0]) // 2, (1280 - resized.shape[1]) // 2
            canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
            resized_frames.append(canvas)
        sets[f"face_{round(125 * scale)}px_in_1280x720"] = resized_frames
    for name, (x, y, width, height) in CLOSE_UP_REGIONS.items():
        sets[name] = [
            cv2.resize(frame[y:y + height, x:x + width], (1280, 720), interpolation=cv2.INTER_LINEAR)
            for frame in frames
        ]
    return sets


def count_detections(detections: list[list[Box]], images: list[LabelledImage] | None) -> dict:
    """Count hits and false positives, with one face per image unless `images` marks it face-free.

    Without `images` (the clip), any box counts as the face and every further
    box as a false positive. With labelled images, only a box that overlaps the
    face region counts as the face.
    """
    hits = false_positives = 0
    for index, boxes in enumerate(detections):
        face = images[index].face if images is not None else None
        if images is not None and face is None:
            false_positives += len(boxes)
            continue
        if face is not None:
            matched = best_match(boxes, face)
        else:
            matched = boxes[0] if boxes else None
        hits += matched is not None
        false_positives += len(boxes) - (matched is not None)
    return {"images": len(detections), "hits": hits, "false_positives": false_positives}


def time_detector(detector: FaceDetector, frames: list[np.ndarray], repeats: int) -> dict:
    """Median and 90th percentile of `detect` time in ms per frame size, after warm-up."""
    results = {}
    for width, height in TIMING_SIZES:
        resized = [cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR) for frame in frames]
        for frame in resized[:3]:
            detector.detect(frame)
        times = []
        for _ in range(repeats):
            for frame in resized:
                start = time.perf_counter()
                detector.detect(frame)
                times.append((time.perf_counter() - start) * 1000)
        times.sort()
        results[f"{width}x{height}"] = {
            "median_ms": statistics.median(times),
            "p90_ms": times[int(0.9 * (len(times) - 1))],
            "calls": len(times),
        }
    return results


def compare_framing(haar_boxes: list[list[Box]], other_boxes: list[list[Box]], targets: list) -> dict:
    """Median Haar-to-backend side ratio and centre offsets over faces found by both.

    `targets` gives, per image, the face region both boxes must overlap, or None
    to pair the two backends' best-overlapping boxes directly.
    """
    ratios, offsets_x, offsets_y = [], [], []
    for haar, other, target in zip(haar_boxes, other_boxes, targets):
        if target is not None:
            haar_box, other_box = best_match(haar, target), best_match(other, target)
        else:
            pairs = [(iou(h, o), h, o) for h in haar for o in other]
            pairs = [pair for pair in pairs if pair[0] >= MATCH_IOU]
            haar_box, other_box = max(pairs, key=lambda pair: pair[0])[1:] if pairs else (None, None)
        if haar_box is None or other_box is None:
            continue
        ratios.append(haar_box.side / other_box.side)
        offsets_x.append((haar_box.centre[0] - other_box.centre[0]) / other_box.side)
        offsets_y.append((haar_box.centre[1] - other_box.centre[1]) / other_box.side)
    return summarize_framing(ratios, offsets_x, offsets_y)


def summarize_framing(ratios: list[float], offsets_x: list[float], offsets_y: list[float]) -> dict:
    if not ratios:
        return {"faces": 0}
    quartiles = lambda values: [float(q) for q in np.percentile(values, [25, 75])]  # noqa: E731
    return {
        "faces": len(ratios),
        "scale": statistics.median(ratios),
        "scale_quartiles": quartiles(ratios),
        "offset_x": statistics.median(offsets_x),
        "offset_y": statistics.median(offsets_y),
        "offset_y_quartiles": quartiles(offsets_y),
    }


def measure_fer_framing(haar_boxes: list[list[Box]], fer_images: list[LabelledImage]) -> dict:
    """FER-2013 face side over Haar box side, and the Haar box's offset inside the face."""
    ratios, offsets_x, offsets_y = [], [], []
    for boxes, image in zip(haar_boxes, fer_images):
        box = best_match(boxes, image.face)
        if box is None:
            continue
        x, y, side = image.face
        ratios.append(side / box.side)
        offsets_x.append((x + side / 2 - box.centre[0]) / box.side)
        offsets_y.append((y + side / 2 - box.centre[1]) / box.side)
    return summarize_framing(ratios, offsets_x, offsets_y)


def percentiles(values: list[float]) -> dict:
    """Percentiles of sharpness values, and the share that `QualityConfig` rejects as blurred."""
    points = (1, 5, 10, 50, 90, 95, 99)
    threshold = QualityConfig().min_sharpness
    return {f"p{point}": float(np.percentile(values, point)) for point in points} | {
        "count": len(values),
        "share_blurred": float(np.mean(np.asarray(values) < threshold)),
    }


def measure_sharpness_levels(fer_dir: Path, clip_crops: list[np.ndarray], count: int, seed: int) -> dict:
    """Laplacian variance of FER-2013 faces, blurred and shrunk copies, and the clip's crops."""
    rng = np.random.default_rng(seed)
    paths = list_fer_faces(fer_dir, "PrivateTest")
    chosen = rng.choice(len(paths), size=min(count, len(paths)), replace=False)
    faces = [cv2.imread(str(paths[index]), cv2.IMREAD_GRAYSCALE) for index in sorted(chosen)]

    levels = {"fer2013": percentiles([measure_sharpness(face) for face in faces])}
    for sigma in (1.0, 1.5, 2.0, 3.0):
        blurred = [cv2.GaussianBlur(face, (0, 0), sigma) for face in faces]
        levels[f"fer2013_gaussian_sigma_{sigma}"] = percentiles([measure_sharpness(face) for face in blurred])
    for side in (24, 16, 12):
        # A face this many pixels wide in the frame, upscaled to 48x48 as a crop would be.
        shrunk = [
            cv2.resize(cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA), (48, 48),
                       interpolation=cv2.INTER_LINEAR)
            for face in faces
        ]
        levels[f"fer2013_from_{side}px"] = percentiles([measure_sharpness(face) for face in shrunk])
    if clip_crops:
        levels["clip_crops"] = percentiles([measure_sharpness(crop) for crop in clip_crops])
    return levels


def machine_description() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.warning("Failed to run lscpu: %s", error)
        lscpu = ""
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
        platform.processor() or "unknown CPU",
    )
    return f"{model}, {len(os.sched_getaffinity(0))} cores, OpenCV {cv2.__version__}"


def run_backend(name: str, data: dict, args: argparse.Namespace) -> tuple[dict, dict]:
    """Run one backend on every data set. Returns its results and its raw boxes per set."""
    detector = create_detector(name)
    boxes = {key: [detector.detect(image) for image in images] for key, images in data["sets"].items()}
    results = {
        "clip": count_detections(boxes["clip"], None),
        "portraits": count_detections(boxes["portraits"], data["labelled"]["portraits"]),
        "fer2013_pasted": count_detections(boxes["fer2013_pasted"], data["labelled"]["fer2013_pasted"]),
        "face_free": count_detections(boxes["face_free"], data["labelled"]["face_free"]),
        "face_sizes": {
            key: count_detections(boxes[key], None) for key in data["face_size_sets"]
        },
        "face_free_by_image": {
            image.name: len(found) for image, found in zip(data["labelled"]["face_free"], boxes["face_free"])
        },
        "time_per_frame": time_detector(detector, data["timing_frames"], args.repeats),
    }
    logger.info("Measured detector %s", name)
    return results, boxes


HAAR_SWEEP = (
    {"scale_factor": 1.1, "min_neighbors": 5, "equalize": True},
    {"scale_factor": 1.1, "min_neighbors": 7, "equalize": True},
    {"scale_factor": 1.1, "min_neighbors": 9, "equalize": True},
    {"scale_factor": 1.1, "min_neighbors": 7, "equalize": False},
    {"scale_factor": 1.2, "min_neighbors": 5, "equalize": True},
    {"scale_factor": 1.2, "min_neighbors": 7, "equalize": True},
)
SCORE_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7)


def sweep_haar(data: dict) -> list[dict]:
    """Count hits and false positives for each Haar setting in HAAR_SWEEP.

    Uses every 2nd clip frame and the first 150 pasted FER-2013 faces to bound the run time.
    """
    clip = data["sets"]["clip"][::2]
    fer = data["labelled"]["fer2013_pasted"][:150]
    face_free = data["labelled"]["face_free"]
    rows = []
    for options in HAAR_SWEEP:
        detector = create_detector("haar", **options)
        rows.append(options | {
            "clip": count_detections([detector.detect(frame) for frame in clip], None),
            "fer2013_pasted": count_detections([detector.detect(item.image) for item in fer], fer),
            "face_free": count_detections([detector.detect(item.image) for item in face_free], face_free),
        })
    return rows


def sweep_scores(name: str, data: dict) -> list[dict]:
    """Count hits and false positives of a BlazeFace backend at each of SCORE_THRESHOLDS."""
    detector = create_detector(name, min_score=min(SCORE_THRESHOLDS) - 0.2)
    keys = ("clip", "portraits", "fer2013_pasted", "face_free")
    boxes = {key: [detector.detect(image) for image in data["sets"][key]] for key in keys}
    rows = []
    for threshold in SCORE_THRESHOLDS:
        above = {key: [[box for box in found if box.score >= threshold] for found in boxes[key]] for key in keys}
        rows.append({"min_score": threshold, "clip": count_detections(above["clip"], None)} | {
            key: count_detections(above[key], data["labelled"][key]) for key in keys[1:]
        })
    return rows


def print_sweeps(sweeps: dict) -> None:
    cell = lambda count: f"{count['hits']}/{count['images']}, {count['false_positives']}"  # noqa: E731
    print("\nHaar settings (hits / images, false positives)")
    print(f"{'scale min_neigh equalize':<28}{'clip':>14}{'FER pasted':>16}{'face-free FP':>14}")
    for row in sweeps["haar"]:
        setting = f"{row['scale_factor']:<6}{row['min_neighbors']:<10}{row['equalize']!s:<12}"
        print(f"{setting:<28}{cell(row['clip']):>14}{cell(row['fer2013_pasted']):>16}{row['face_free']['false_positives']:>14}")
    for name, rows in sweeps["scores"].items():
        print(f"\n{name} score thresholds (hits / images, false positives)")
        print(f"{'min_score':<12}{'clip':>14}{'portraits':>12}{'FER pasted':>16}{'face-free FP':>14}")
        for row in rows:
            print(
                f"{row['min_score']:<12}{cell(row['clip']):>14}{cell(row['portraits']):>12}"
                f"{cell(row['fer2013_pasted']):>16}{row['face_free']['false_positives']:>14}"
            )


def load_data(args: argparse.Namespace) -> dict:
    clip = read_clip(args.clip)
    portraits = load_portraits()
    fer = paste_fer_faces(args.fer_dir, args.fer_count, args.seed)
    face_free = load_face_free_images()
    labelled = {"portraits": portraits, "fer2013_pasted": fer, "face_free": face_free}
    # Every 5th frame of the clip, resized so that the face is 250 to 62 px wide in 1280x720.
    face_size_sets = rescale_into_frames(clip[::5], FACE_SIZE_SCALES)
    sets = (
        {"clip": clip}
        | {key: [item.image for item in items] for key, items in labelled.items()}
        | face_size_sets
    )
    # Every 12th frame spreads the timing frames across the clip's 115.
    return {"sets": sets, "labelled": labelled, "face_size_sets": list(face_size_sets), "timing_frames": clip[::12]}


def clip_crops_for(name: str, clip_boxes: list[list[Box]], frames: list[np.ndarray]) -> list[np.ndarray]:
    """Crops of the best-scored box in each clip frame, skipping clipped ones."""
    crops = []
    for boxes, frame in zip(clip_boxes, frames):
        if not boxes:
            continue
        box = max(boxes, key=lambda box: box.score or 0.0)
        region = crop_region(box, frame.shape, FRAMINGS[name])
        if not region.clipped:
            crops.append(cut_crop(frame, region))
    return crops


def print_report(report: dict) -> None:
    print(f"\nMachine: {report['machine']}")
    print("\nDetection (hits / images, false positives)")
    print(f"{'detector':<16}{'clip':>16}{'portraits':>14}{'FER pasted':>18}{'face-free FP':>14}")
    for name, result in report["detectors"].items():
        cells = [
            f"{result[key]['hits']}/{result[key]['images']}, {result[key]['false_positives']}"
            for key in ("clip", "portraits", "fer2013_pasted")
        ]
        print(f"{name:<16}{cells[0]:>16}{cells[1]:>14}{cells[2]:>18}{result['face_free']['false_positives']:>14}")

    print("\nFace sizes: clip frames resized into 1280x720 (hits / frames, false positives)")
    size_keys = list(next(iter(report["detectors"].values()))["face_sizes"])
    print(f"{'detector':<16}" + "".join(f"{key.split('_in_')[0]:>15}" for key in size_keys))
    for name, result in report["detectors"].items():
        cells = [f"{count['hits']}/{count['images']}, {count['false_positives']}" for count in result["face_sizes"].values()]
        print(f"{name:<16}" + "".join(f"{cell:>15}" for cell in cells))

    print("\nMedian (p90) time per frame in ms")
    print(f"{'detector':<16}" + "".join(f"{f'{w}x{h}':>18}" for w, h in TIMING_SIZES))
    for name, result in report["detectors"].items():
        cells = [
            f"{timing['median_ms']:.1f} ({timing['p90_ms']:.1f})" for timing in result["time_per_frame"].values()
        ]
        print(f"{name:<16}" + "".join(f"{cell:>18}" for cell in cells))

    print("\nFraming against Haar: median [quartiles] of scale = Haar side / box side, offsets in box sides")
    print("(fer2013_face_vs_haar: scale = FER-2013 face side / Haar side, offsets in Haar sides)")
    for label, framing in report["framing"].items():
        if framing.get("faces"):
            print(
                f"{label:<40} faces {framing['faces']:>4}  scale {framing['scale']:.3f} "
                f"[{framing['scale_quartiles'][0]:.3f}, {framing['scale_quartiles'][1]:.3f}]  "
                f"offset_x {framing['offset_x']:+.3f}  offset_y {framing['offset_y']:+.3f} "
                f"[{framing['offset_y_quartiles'][0]:+.3f}, {framing['offset_y_quartiles'][1]:+.3f}]"
            )
        else:
            print(f"{label:<40} no face found by both")

    print(f"\nCrop sharpness (variance of the Laplacian of 48x48 crops); blurred = share below {QualityConfig().min_sharpness:g}")
    for label, level in report["sharpness"].items():
        print(
            f"{label:<32} n {level['count']:>4}  p1 {level['p1']:7.1f}  p5 {level['p5']:7.1f}  "
            f"p10 {level['p10']:7.1f}  median {level['p50']:7.1f}  p95 {level['p95']:7.1f}  p99 {level['p99']:7.1f}  "
            f"blurred {level['share_blurred']:6.1%}"
        )


def run(args: argparse.Namespace) -> dict:
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    data = load_data(args)
    report = {"machine": machine_description(), "command": " ".join(sys.argv), "detectors": {}, "framing": {}}
    all_boxes = {}
    for name in args.detectors:
        report["detectors"][name], all_boxes[name] = run_backend(name, data, args)

    if "haar" in all_boxes:
        report["framing"] = measure_framings(all_boxes, data)

    if args.sweep:
        report["sweeps"] = {
            "haar": sweep_haar(data),
            "scores": {name: sweep_scores(name, data) for name in args.detectors if name.startswith("blazeface")},
        }
        logger.info("Measured the Haar settings and BlazeFace score thresholds")

    reference = DEFAULT_DETECTOR if DEFAULT_DETECTOR in all_boxes else args.detectors[0]
    crops = clip_crops_for(reference, all_boxes[reference]["clip"], data["sets"]["clip"])
    report["sharpness"] = measure_sharpness_levels(args.fer_dir, crops, args.sharpness_count, args.seed)
    report["sharpness_clip_crops_detector"] = reference
    return report


def measure_framings(all_boxes: dict, data: dict) -> dict:
    """Framing of FER-2013 faces against Haar boxes, and of each backend against Haar, per data set."""
    fer_images = data["labelled"]["fer2013_pasted"]
    framings = {"fer2013_face_vs_haar": measure_fer_framing(all_boxes["haar"]["fer2013_pasted"], fer_images)}
    targets = {
        "clip": [None] * len(data["sets"]["clip"]),
        "portraits": [image.face for image in data["labelled"]["portraits"]],
        "fer2013_pasted": [image.face for image in fer_images],
    }
    for name in all_boxes:
        if name == "haar":
            continue
        for key, key_targets in targets.items():
            framings[f"{name}_vs_haar_{key}"] = compare_framing(all_boxes["haar"][key], all_boxes[name][key], key_targets)
        framings[f"{name}_vs_haar_all"] = compare_framing(
            sum((all_boxes["haar"][key] for key in targets), []),
            sum((all_boxes[name][key] for key in targets), []),
            sum(targets.values(), []),
        )
    return framings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=CLIP_PATH, help="video with one face in every frame")
    parser.add_argument("--fer-dir", type=Path, default=FER_DIR, help="FER-2013 image-folder release")
    parser.add_argument("--fer-count", type=int, default=300, help="FER-2013 faces to paste into frames (default: 300)")
    parser.add_argument("--sharpness-count", type=int, default=2000, help="FER-2013 faces for the sharpness levels (default: 2000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the timing frames per size (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV worker threads (default: 1, as BlazeFace uses)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for choosing and placing faces")
    parser.add_argument(
        "--detectors", nargs="+", default=list(DETECTOR_NAMES), choices=DETECTOR_NAMES,
        help="backends to measure; haar must be among them for the framing comparison",
    )
    parser.add_argument(
        "--sweep", action="store_true",
        help="also measure other Haar settings and BlazeFace score thresholds (adds a few minutes)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    report = run(args)
    print_report(report)
    if "sweeps" in report:
        print_sweeps(report["sweeps"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        logger.info("Wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
