"""Training augmentation: the warp is centred, bounded, mirrors half the faces and keeps detail."""

import cv2
import numpy as np
import pytest

from classifier.augment import RandomAffine, make_augmentation


def smooth_faces(count: int, size: int = 48, seed: int = 3) -> np.ndarray:
    """Random images with face-like detail: noise blurred by a Gaussian of 1 pixel, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-1, 1, size=(count, size, size)).astype(np.float32)
    blurred = np.stack([cv2.GaussianBlur(image, (0, 0), 1.0) for image in noise])
    return (blurred / np.abs(blurred).max())[..., np.newaxis]


def detail(images: np.ndarray) -> float:
    """Mean absolute Laplacian: how much fine detail the images keep."""
    return float(np.mean([np.abs(cv2.Laplacian(image, cv2.CV_32F)).mean() for image in images[..., 0]]))


def test_zero_ranges_keep_faces():
    faces = smooth_faces(8)
    still = RandomAffine(rotation_degrees=0, shift_fraction=0, zoom_fraction=0, flip=False, seed=1)

    np.testing.assert_array_equal(np.asarray(still(faces, training=True)), faces)


def test_inference_keeps_faces():
    faces = smooth_faces(8)

    np.testing.assert_array_equal(np.asarray(make_augmentation(1)(faces, training=False)), faces)


def test_flip_mirrors_about_half():
    faces = smooth_faces(64)
    flip_only = RandomAffine(rotation_degrees=0, shift_fraction=0, zoom_fraction=0, flip=True, seed=1)

    out = np.asarray(flip_only(faces, training=True))

    unchanged = np.all(out == faces, axis=(1, 2, 3))
    mirrored = np.all(out == faces[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(unchanged | mirrored)
    assert 16 <= mirrored.sum() <= 48


def test_rotation_and_zoom_keep_centre():
    # An odd size puts the centre on a pixel, which rotation and zoom must leave in place.
    faces = smooth_faces(16, size=49)
    turn = RandomAffine(rotation_degrees=10, shift_fraction=0, zoom_fraction=0.1, flip=False, seed=2)

    out = np.asarray(turn(faces, training=True))

    np.testing.assert_allclose(out[:, 24, 24], faces[:, 24, 24], atol=1e-5)
    assert not np.allclose(out, faces)


def test_shifts_within_fraction():
    # Each pixel's value is its x coordinate, so a shift by s pixels changes the centre value by s.
    ramp = np.tile(np.arange(49, dtype=np.float32), (49, 1))
    faces = np.repeat(ramp[np.newaxis, ..., np.newaxis], 64, axis=0)
    shift = RandomAffine(rotation_degrees=0, shift_fraction=0.1, zoom_fraction=0, flip=False, seed=4)

    moved = np.asarray(shift(faces, training=True))[:, 24, 24, 0] - 24

    assert np.abs(moved).max() <= 0.1 * 49 + 1e-4
    assert np.abs(moved).max() > 2


def test_augmentation_keeps_most_detail():
    # One resampling keeps about 80% of the detail of these images. Chaining Keras's
    # rotation, translation and zoom layers, each resampling in turn, kept about 56%.
    faces = smooth_faces(128)

    augmented = np.asarray(make_augmentation(5)(faces, training=True))

    assert augmented.shape == faces.shape
    assert detail(augmented) > 0.7 * detail(faces)


@pytest.mark.parametrize(
    "kwargs",
    [{"rotation_degrees": -1}, {"shift_fraction": -0.1}, {"zoom_fraction": 1.0}],
)
def test_bad_ranges_rejected(kwargs):
    with pytest.raises(ValueError, match="expected rotation_degrees"):
        RandomAffine(**kwargs)
