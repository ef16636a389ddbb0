"""FER-2013 readers, the array cache, stratified subsets and the duplicate mask, on generated datasets."""

import csv
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import classifier.data as data
from classifier.data import DatasetError, FerSplit, duplicate_mask, load_fer2013
from classifier.labels import EMOTIONS, SPLITS

HEADER = ["emotion", "pixels", "Usage"]
# (emotion index, Usage) of every row of the generated CSV, in file order.
CSV_ROWS = [
    (0, "Training"), (3, "Training"), (6, "Training"), (3, "Training"),
    (1, "PublicTest"), (5, "PublicTest"),
    (2, "PrivateTest"), (4, "PrivateTest"), (4, "PrivateTest"),
]


def face(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(48, 48), dtype=np.uint8)


def pixel_text(pixels: np.ndarray) -> str:
    return " ".join(str(value) for value in pixels.ravel())


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def csv_dataset(tmp_path):
    rows = [[str(label), pixel_text(face(index)), split] for index, (label, split) in enumerate(CSV_ROWS)]
    return write_csv(tmp_path / "fer2013.csv", rows)


def write_folder_image(root: Path, split: str, emotion: str, name: str, pixels: np.ndarray) -> Path:
    part = "train" if split == "Training" else "test"
    path = root / part / emotion / f"{split}_{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def make_folder_layout(root: Path) -> Path:
    for part in ("train", "test"):
        for emotion in EMOTIONS:
            (root / part / emotion).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def folder_dataset(tmp_path):
    """An image-folder release with two Training faces, one PublicTest and one PrivateTest face."""
    root = make_folder_layout(tmp_path / "fer")
    write_folder_image(root, "Training", "happy", "20", face(20))
    write_folder_image(root, "Training", "angry", "21", face(21))
    write_folder_image(root, "PublicTest", "sad", "22", face(22))
    write_folder_image(root, "PrivateTest", "neutral", "23", face(23))
    # Files without an image suffix are not faces and must be skipped.
    (root / "train" / "happy" / "notes.txt").write_text("not a face")
    return root


def test_csv_reader_arrays_and_labels(csv_dataset, tmp_path):
    splits = load_fer2013(csv_dataset, cache_dir=tmp_path / "cache")

    assert set(splits) == set(SPLITS)
    for split in SPLITS:
        rows = [index for index, (_, usage) in enumerate(CSV_ROWS) if usage == split]
        loaded = splits[split]
        assert loaded.images.dtype == np.uint8
        assert loaded.images.shape == (len(rows), 48, 48)
        assert loaded.labels.dtype == np.int64
        assert loaded.labels.tolist() == [CSV_ROWS[index][0] for index in rows]
        for position, index in enumerate(rows):
            np.testing.assert_array_equal(loaded.images[position], face(index))
            # The header is row 1, so the first face is row 2.
            assert loaded.names[position] == f"{csv_dataset}:row {index + 2}"


def test_csv_reader_accepts_folder_holding_csv(csv_dataset, tmp_path):
    by_file = load_fer2013(csv_dataset, cache_dir=tmp_path / "cache")
    by_folder = load_fer2013(csv_dataset.parent, cache_dir=tmp_path / "cache")

    for split in SPLITS:
        np.testing.assert_array_equal(by_folder[split].images, by_file[split].images)
        np.testing.assert_array_equal(by_folder[split].labels, by_file[split].labels)


def test_folder_reader_arrays_and_labels(folder_dataset, tmp_path):
    splits = load_fer2013(folder_dataset, cache_dir=tmp_path / "cache")

    training = splits["Training"]
    # Class folders are read in EMOTIONS order, so angry comes before happy.
    assert training.names.tolist() == ["train/angry/Training_21.png", "train/happy/Training_20.png"]
    assert training.labels.tolist() == [EMOTIONS.index("angry"), EMOTIONS.index("happy")]
    np.testing.assert_array_equal(training.images[0], face(21))
    np.testing.assert_array_equal(training.images[1], face(20))

    assert splits["PublicTest"].names.tolist() == ["test/sad/PublicTest_22.png"]
    assert splits["PublicTest"].labels.tolist() == [EMOTIONS.index("sad")]
    np.testing.assert_array_equal(splits["PublicTest"].images[0], face(22))

    assert splits["PrivateTest"].names.tolist() == ["test/neutral/PrivateTest_23.png"]
    assert splits["PrivateTest"].labels.tolist() == [EMOTIONS.index("neutral")]
    assert splits["PrivateTest"].images.shape == (1, 48, 48)


def test_cache_written_and_reused(folder_dataset, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = load_fer2013(folder_dataset, cache_dir=cache_dir)
    cached = list(cache_dir.glob("fer2013-*.npz"))
    assert len(cached) == 1

    def fail_to_decode(file):
        raise AssertionError(f"decoded {file} again although the cache is valid")

    monkeypatch.setattr(data, "read_face_image", fail_to_decode)
    second = load_fer2013(folder_dataset, cache_dir=cache_dir)

    for split in SPLITS:
        np.testing.assert_array_equal(second[split].images, first[split].images)
        np.testing.assert_array_equal(second[split].labels, first[split].labels)
        np.testing.assert_array_equal(second[split].names, first[split].names)


def test_cache_invalidated_by_edited_file(csv_dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    load_fer2013(csv_dataset, cache_dir=cache_dir)

    rows = [[str(label), pixel_text(face(100 + index)), split] for index, (label, split) in enumerate(CSV_ROWS)]
    write_csv(csv_dataset, rows)
    stat = csv_dataset.stat()
    os.utime(csv_dataset, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    edited = load_fer2013(csv_dataset, cache_dir=cache_dir)

    assert len(list(cache_dir.glob("fer2013-*.npz"))) == 2
    np.testing.assert_array_equal(edited["Training"].images[0], face(100))


@pytest.mark.parametrize(
    ("header", "row", "expected"),
    [
        (["emotion", "image", "Usage"], None, "expected the header 'emotion,pixels,Usage'"),
        (HEADER, ["0", pixel_text(face(1))], "expected 3 columns"),
        (HEADER, ["7", pixel_text(face(1)), "Training"], "expected an emotion index from 0 to 6, got '7'"),
        (HEADER, ["-1", pixel_text(face(1)), "Training"], "expected an emotion index from 0 to 6, got '-1'"),
        (HEADER, ["happy", pixel_text(face(1)), "Training"], "expected an emotion index from 0 to 6, got 'happy'"),
        (HEADER, ["0", pixel_text(face(1)), "Validation"], "expected Usage to be one of"),
        (HEADER, ["0", "1 2 3", "Training"], "expected 2304 pixel values (48x48), got 3"),
        (HEADER, ["0", "0.5 " + " ".join(["0"] * 2303), "Training"], "from 0 to 255, got '0.5'"),
        (HEADER, ["0", "256 " + " ".join(["0"] * 2303), "Training"], "from 0 to 255, got '256'"),
        (HEADER, ["0", "-3 " + " ".join(["0"] * 2303), "Training"], "from 0 to 255, got '-3'"),
    ],
    ids=[
        "wrong header", "wrong column count", "emotion too large", "negative emotion", "emotion name",
        "bad usage", "wrong pixel count", "non-integer pixel", "pixel above 255", "negative pixel",
    ],
)
def test_malformed_csv_rejected(tmp_path, header, row, expected):
    good_row = ["3", pixel_text(face(0)), "Training"]
    path = write_csv(tmp_path / "fer2013.csv", [good_row] + ([row] if row else []), header=header)

    with pytest.raises(DatasetError) as raised:
        load_fer2013(path, cache_dir=tmp_path / "cache")

    message = str(raised.value)
    assert str(path) in message
    assert expected in message
    if row is not None:
        assert "row 3" in message  # header, good row, malformed row


def test_malformed_csv_writes_no_cache(tmp_path):
    path = write_csv(tmp_path / "fer2013.csv", [["3", "1 2", "Training"]])

    with pytest.raises(DatasetError):
        load_fer2013(path, cache_dir=tmp_path / "cache")

    assert list((tmp_path / "cache").glob("*.npz")) == []


def test_small_image_rejected(folder_dataset, tmp_path):
    bad = write_folder_image(folder_dataset, "Training", "fear", "30", face(30)[:40, :40])

    with pytest.raises(DatasetError, match="expected a 48x48 8-bit grayscale image") as raised:
        load_fer2013(folder_dataset, cache_dir=tmp_path / "cache")

    assert str(bad) in str(raised.value)
    assert "(40, 40)" in str(raised.value)


def test_colour_image_rejected(folder_dataset, tmp_path):
    colour = np.dstack([face(31), face(32), face(33)])
    bad = write_folder_image(folder_dataset, "PublicTest", "fear", "31", colour)

    with pytest.raises(DatasetError, match="expected a 48x48 8-bit grayscale image") as raised:
        load_fer2013(folder_dataset, cache_dir=tmp_path / "cache")

    assert str(bad) in str(raised.value)
    assert "(48, 48, 3)" in str(raised.value)


def test_sixteen_bit_image_rejected(folder_dataset, tmp_path):
    deep = face(34).astype(np.uint16) * 256
    bad = write_folder_image(folder_dataset, "Training", "fear", "34", deep)

    with pytest.raises(DatasetError, match="expected a 48x48 8-bit grayscale image") as raised:
        load_fer2013(folder_dataset, cache_dir=tmp_path / "cache")

    assert str(bad) in str(raised.value)
    assert "uint16" in str(raised.value)


def test_unreadable_image_rejected(folder_dataset, tmp_path):
    bad = folder_dataset / "test" / "surprise" / "PrivateTest_35.jpg"
    bad.write_bytes(b"this is not a JPEG file")

    with pytest.raises(DatasetError, match="not a readable image") as raised:
        load_fer2013(folder_dataset, cache_dir=tmp_path / "cache")

    assert str(bad) in str(raised.value)


def test_missing_class_folder_rejected(folder_dataset, tmp_path):
    missing = folder_dataset / "test" / "disgust"
    missing.rmdir()

    with pytest.raises(DatasetError, match="missing class folder") as raised:
        load_fer2013(folder_dataset, cache_dir=tmp_path / "cache")

    assert str(missing) in str(raised.value)


def test_missing_split_folder_rejected(folder_dataset, tmp_path):
    shutil.rmtree(folder_dataset / "test")

    with pytest.raises(DatasetError, match="test/ folder") as raised:
        load_fer2013(folder_dataset, cache_dir=tmp_path / "cache")

    assert str(folder_dataset) in str(raised.value)


def test_wrong_file_prefix_rejected(folder_dataset, tmp_path):
    bad = folder_dataset / "train" / "happy" / "Validation_40.png"
    assert cv2.imwrite(str(bad), face(40))

    with pytest.raises(DatasetError, match="expected the file name to start with one of") as raised:
        load_fer2013(folder_dataset, cache_dir=tmp_path / "cache")

    assert str(bad) in str(raised.value)


def test_missing_path_rejected(tmp_path):
    missing = tmp_path / "no-such-dataset"

    with pytest.raises(DatasetError, match="FER-2013 not found") as raised:
        load_fer2013(missing, cache_dir=tmp_path / "cache")

    assert str(missing) in str(raised.value)


def make_split(labels: list[int]) -> FerSplit:
    count = len(labels)
    images = np.stack([face(1000 + index) for index in range(count)])
    names = np.array([f"face {index}" for index in range(count)])
    return FerSplit(images, np.array(labels, dtype=np.int64), names)


def test_subset_stratified_by_emotion():
    # 60 happy, 30 sad and 10 angry faces, grouped by class as the folder reader returns them.
    split = make_split([3] * 60 + [4] * 30 + [0] * 10)

    subset = split.subset(20, seed=5)

    assert len(subset) == 20
    assert np.bincount(subset.labels, minlength=7).tolist() == [2, 0, 0, 12, 6, 0, 0]


def test_subset_gives_leftover_to_largest_remainders():
    # Shares of 10 faces: 5.6 happy, 3.2 sad and 1.2 angry. Rounding down leaves one face,
    # which goes to happy because its remainder is the largest.
    split = make_split([3] * 56 + [4] * 32 + [0] * 12)

    subset = split.subset(10, seed=0)

    assert np.bincount(subset.labels, minlength=7).tolist() == [1, 0, 0, 6, 3, 0, 0]


def test_subset_deterministic_per_seed():
    split = make_split([3] * 60 + [4] * 30 + [0] * 10)

    first = split.subset(20, seed=5)
    again = split.subset(20, seed=5)
    other = split.subset(20, seed=6)

    assert first.names.tolist() == again.names.tolist()
    assert first.names.tolist() != other.names.tolist()


def test_subset_keeps_faces_with_labels():
    split = make_split([3] * 60 + [4] * 30 + [0] * 10)
    positions = {name: index for index, name in enumerate(split.names)}

    subset = split.subset(20, seed=5)

    indices = [positions[name] for name in subset.names]
    assert indices == sorted(indices)
    assert len(set(indices)) == len(indices)
    # Not simply the first faces of each class.
    assert indices != list(range(20))
    for position, index in enumerate(indices):
        np.testing.assert_array_equal(subset.images[position], split.images[index])
        assert subset.labels[position] == split.labels[index]


def test_subset_larger_than_split_returns_whole():
    split = make_split([1, 2, 3])

    assert split.subset(3) is split
    assert split.subset(10) is split
    assert len(split.subset(0)) == 0


def test_subset_negative_count_rejected():
    with pytest.raises(ValueError, match="got -1"):
        make_split([1, 2, 3]).subset(-1)


def test_duplicate_mask_marks_exact_copies():
    reference = make_split([0, 1, 2, 3])
    near_copy = reference.images[1].copy()
    near_copy[0, 0] ^= 1
    images = np.stack([reference.images[2], face(2000), near_copy, reference.images[0], reference.images[2]])
    split = FerSplit(images, np.zeros(5, dtype=np.int64), np.array([str(index) for index in range(5)]))

    assert duplicate_mask(split, reference).tolist() == [True, False, False, True, True]
