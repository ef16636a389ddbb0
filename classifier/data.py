"""FER-2013 readers for the original CSV and the image-folder release, with an array cache.

Both layouts decode to the same `FerSplit` arrays: 48x48 uint8 faces, integer
labels in the CSV's class order, and a name per face (a file path or a CSV row).
The names trace every error and every duplicate back to its source.
"""

import csv
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from classifier.labels import EMOTIONS, SPLITS

logger = logging.getLogger(__name__)

FACE_SIZE = 48
CSV_NAME = "fer2013.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_VERSION = 1


class DatasetError(ValueError):
    """The dataset is missing, laid out wrongly or contains a malformed record."""


@dataclass(frozen=True)
class FerSplit:
    """One split of FER-2013."""

    images: np.ndarray  # uint8, shape (N, 48, 48)
    labels: np.ndarray  # int64, shape (N,), indices into EMOTIONS
    names: np.ndarray  # str, shape (N,): the file path or "fer2013.csv:row N"

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, count: int, seed: int = 0) -> "FerSplit":
        """Return a random sample of `count` faces, stratified by emotion.

        The same seed and split give the same sample, in split order. Each emotion
        gets its share of `count` rounded down, and the faces left over go to the
        emotions with the largest remainders. A `count` of at least the split's
        size returns the whole split.
        """
        if count < 0:
            raise ValueError(f"expected a subset size of at least 0, got {count}")
        if count >= len(self):
            return self

        rng = np.random.default_rng(seed)
        classes, class_sizes = np.unique(self.labels, return_counts=True)
        shares = class_sizes * count / len(self)
        sample_sizes = np.floor(shares).astype(np.int64)
        leftover = count - int(sample_sizes.sum())
        sample_sizes[np.argsort(sample_sizes - shares, kind="stable")[:leftover]] += 1

        chosen = [
            rng.choice(np.flatnonzero(self.labels == emotion), size=size, replace=False)
            for emotion, size in zip(classes, sample_sizes)
        ]
        indices = np.sort(np.concatenate(chosen))
        return FerSplit(self.images[indices], self.labels[indices], self.names[indices])


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "emotion-pipeline"


def load_fer2013(path: str | Path, cache_dir: Path | None = None) -> dict[str, FerSplit]:
    """Load every split of FER-2013 from a CSV file or an image-folder release.

    `path` may be `fer2013.csv` itself, a folder that contains it, or a folder
    with `train/<emotion>/` and `test/<emotion>/`. Decoded arrays are cached in
    `cache_dir` (default: ~/.cache/emotion-pipeline), keyed by the path, size
    and modification time of every source file, so a second load takes seconds
    and an edited dataset is decoded again.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DatasetError(
            f"FER-2013 not found at {path}: pass the path of fer2013.csv or of the folder "
            "that holds train/ and test/"
        )

    csv_path = path if path.is_file() else path / CSV_NAME
    if csv_path.is_file():
        sources = [csv_path]
        reader = lambda: read_fer2013_csv(csv_path)  # noqa: E731
    else:
        sources = list_folder_images(path)
        reader = lambda: read_fer2013_folder(path, sources)  # noqa: E731

    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    cache_path = cache_dir / f"fer2013-{fingerprint(sources)}.npz"
    if cache_path.is_file():
        logger.info("Loading cached FER-2013 arrays from %s", cache_path)
        return read_cache(cache_path)

    splits = reader()
    write_cache(cache_path, splits)
    return splits


def fingerprint(sources: list[Path]) -> str:
    """Hash the path, size and modification time of every source file."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for source in sources:
        stat = source.stat()
        digest.update(f"{source}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def read_cache(cache_path: Path) -> dict[str, FerSplit]:
    with np.load(cache_path, allow_pickle=False) as arrays:
        return {
            split: FerSplit(
                arrays[f"{split}_images"], arrays[f"{split}_labels"], arrays[f"{split}_names"]
            )
            for split in SPLITS
        }


def write_cache(cache_path: Path, splits: dict[str, FerSplit]) -> None:
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, data in splits.items():
        arrays[f"{split}_images"] = data.images
        arrays[f"{split}_labels"] = data.labels
        arrays[f"{split}_names"] = data.names

    # Write to a temporary name first so an interrupted write never leaves a
    # truncated cache behind.
    partial = cache_path.with_suffix(".partial.npz")
    np.savez(partial, **arrays)
    partial.replace(cache_path)
    logger.info("Cached FER-2013 arrays in %s", cache_path)


def read_fer2013_csv(csv_path: Path) -> dict[str, FerSplit]:
    """Read the original `emotion,pixels,Usage` CSV."""
    images: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    labels: dict[str, list[int]] = {split: [] for split in SPLITS}
    names: dict[str, list[str]] = {split: [] for split in SPLITS}

    with csv_path.open(newline="") as file:
        rows = csv.reader(file)
        header = next(rows, None)
        if header is None or [column.strip() for column in header[:3]] != ["emotion", "pixels", "Usage"]:
            raise DatasetError(
                f"{csv_path}: expected the header 'emotion,pixels,Usage', got {header!r}"
            )

        for row_number, row in enumerate(tqdm(rows, desc="Reading CSV", unit=" rows"), start=2):
            where = f"{csv_path}:row {row_number}"
            label, pixels, split = parse_csv_row(row, where)
            images[split].append(pixels)
            labels[split].append(label)
            names[split].append(where)

    return {split: to_split(images[split], labels[split], names[split]) for split in SPLITS}


def parse_csv_row(row: list[str], where: str) -> tuple[int, np.ndarray, str]:
    """Validate one CSV row and return its label, 48x48 pixels and split."""
    if len(row) != 3:
        raise DatasetError(f"{where}: expected 3 columns (emotion,pixels,Usage), got {len(row)}")
    emotion, pixel_text, split = (value.strip() for value in row)

    if not (emotion.isascii() and emotion.isdigit()) or int(emotion) >= len(EMOTIONS):
        raise DatasetError(f"{where}: expected an emotion index from 0 to {len(EMOTIONS) - 1}, got {emotion!r}")
    if split not in SPLITS:
        raise DatasetError(f"{where}: expected Usage to be one of {', '.join(SPLITS)}, got {split!r}")

    values = pixel_text.split()
    if len(values) != FACE_SIZE * FACE_SIZE:
        raise DatasetError(
            f"{where}: expected {FACE_SIZE * FACE_SIZE} pixel values (48x48), got {len(values)}"
        )
    try:
        pixels = np.array([int(value) for value in values], dtype=np.int64)
    except ValueError:
        pixels = None
    if pixels is None or pixels.min() < 0 or pixels.max() > 255:
        invalid = next(value for value in values if not is_pixel_value(value))
        raise DatasetError(f"{where}: expected pixel values to be integers from 0 to 255, got {invalid!r}")

    return int(emotion), pixels.astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE), split


def is_pixel_value(text: str) -> bool:
    try:
        return 0 <= int(text) <= 255
    except ValueError:
        return False


def list_folder_images(root: Path) -> list[Path]:
    """List the images of an image-folder release, checking its layout."""
    images = []
    for part in ("train", "test"):
        part_dir = root / part
        if not part_dir.is_dir():
            raise DatasetError(
                f"{root} contains neither {CSV_NAME} nor a {part}/ folder: expected fer2013.csv or "
                "train/<emotion>/ and test/<emotion>/ with the emotions " + ", ".join(EMOTIONS)
            )
        for emotion in EMOTIONS:
            class_dir = part_dir / emotion
            if not class_dir.is_dir():
                raise DatasetError(f"missing class folder {class_dir}: expected one folder per emotion")
            images.extend(
                sorted(file for file in class_dir.iterdir() if file.suffix.lower() in IMAGE_SUFFIXES)
            )
    return images


def read_fer2013_folder(root: Path, files: list[Path]) -> dict[str, FerSplit]:
    """Read the image-folder release; the split comes from each file-name prefix."""
    for file in files:
        split_of(file)

    # OpenCV releases the GIL while decoding, so a few threads keep both cores busy.
    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(
            tqdm(pool.map(read_face_image, files), total=len(files), desc="Reading images", unit=" images")
        )

    images: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    labels: dict[str, list[int]] = {split: [] for split in SPLITS}
    names: dict[str, list[str]] = {split: [] for split in SPLITS}
    for file, pixels in zip(files, decoded):
        split = split_of(file)
        images[split].append(pixels)
        labels[split].append(EMOTIONS.index(file.parent.name))
        names[split].append(str(file.relative_to(root)))

    return {split: to_split(images[split], labels[split], names[split]) for split in SPLITS}


def split_of(file: Path) -> str:
    prefix = file.name.split("_", 1)[0]
    if prefix not in SPLITS:
        raise DatasetError(
            f"{file}: expected the file name to start with one of "
            f"{', '.join(split + '_' for split in SPLITS)}"
        )
    return prefix


def read_face_image(file: Path) -> np.ndarray:
    """Decode one 48x48 grayscale face image."""
    pixels = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise DatasetError(f"{file}: not a readable image")
    if pixels.dtype != np.uint8 or pixels.shape != (FACE_SIZE, FACE_SIZE):
        raise DatasetError(
            f"{file}: expected a 48x48 8-bit grayscale image, got shape {pixels.shape} of {pixels.dtype}"
        )
    return pixels


def to_split(images: list[np.ndarray], labels: list[int], names: list[str]) -> FerSplit:
    stacked = np.stack(images) if images else np.zeros((0, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    return FerSplit(stacked, np.array(labels, dtype=np.int64), np.array(names, dtype=str))


def duplicate_mask(split: FerSplit, reference: FerSplit) -> np.ndarray:
    """Mark the faces of `split` whose pixels exactly equal some face of `reference`."""
    known = {face.tobytes() for face in reference.images}
    return np.array([face.tobytes() in known for face in split.images], dtype=bool)
