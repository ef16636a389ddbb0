from dataclasses import dataclass

import numpy as np
import pytest

from classifier.batching import FaceBatcher


@dataclass
class Crops:
    name: str
    crops: np.ndarray


def frame_with(name: str, faces: int) -> Crops:
    crops = np.zeros((faces, 48, 48), dtype=np.uint8)
    for index in range(faces):
        crops[index] = index
    return Crops(name, crops)


def test_batch_released_when_full():
    batcher = FaceBatcher(max_batch=4, max_delay_s=10.0)
    batcher.add(frame_with("a", 2), now=0.0)
    assert batcher.take(now=0.0) is None

    batcher.add(frame_with("b", 2), now=0.1)
    batch = batcher.take(now=0.1)

    assert batch is not None
    assert [item.name for item in batch.items] == ["a", "b"]
    assert batch.crops.shape == (4, 48, 48)
    assert batcher.pending_faces == 0


def test_batch_released_after_deadline():
    batcher = FaceBatcher(max_batch=32, max_delay_s=0.010)
    batcher.add(frame_with("a", 1), now=5.0)

    assert batcher.seconds_until_due(now=5.004) == pytest.approx(0.006)
    assert batcher.take(now=5.009) is None
    batch = batcher.take(now=5.010)

    assert batch is not None
    assert batch.oldest_arrival == 5.0


def test_frame_faces_never_split_across_batches():
    batcher = FaceBatcher(max_batch=4, max_delay_s=0.0)
    for name, faces in (("a", 3), ("b", 3), ("c", 1)):
        batcher.add(frame_with(name, faces), now=0.0)

    first = batcher.take(now=0.0)
    second = batcher.take(now=0.0)

    assert [item.name for item in first.items] == ["a"]
    assert [item.name for item in second.items] == ["b", "c"]
    assert batcher.take(now=0.0) is None


def test_oversized_frame_forms_own_batch():
    batcher = FaceBatcher(max_batch=2, max_delay_s=1.0)
    batcher.add(frame_with("crowd", 5), now=0.0)
    batcher.add(frame_with("next", 1), now=0.0)

    batch = batcher.take(now=0.0)

    assert [item.name for item in batch.items] == ["crowd"]
    assert len(batch.crops) == 5
    assert batcher.pending_faces == 1


def test_split_returns_outputs_per_frame():
    batcher = FaceBatcher(max_batch=8, max_delay_s=0.0)
    for name, faces in (("a", 2), ("empty", 0), ("b", 3)):
        batcher.add(frame_with(name, faces), now=0.0)
    batch = batcher.take(now=0.0)
    outputs = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)

    parts = batch.split(outputs)

    assert [len(part) for part in parts] == [2, 0, 3]
    np.testing.assert_array_equal(parts[0], outputs[:2])
    np.testing.assert_array_equal(parts[2], outputs[2:])


def test_force_takes_batch_before_deadline():
    batcher = FaceBatcher(max_batch=32, max_delay_s=60.0)
    batcher.add(frame_with("a", 1), now=0.0)

    assert batcher.take(now=0.0) is None
    assert batcher.take(now=0.0, force=True) is not None


def test_invalid_limits_rejected():
    with pytest.raises(ValueError, match="max_batch"):
        FaceBatcher(max_batch=0, max_delay_s=0.01)
    with pytest.raises(ValueError, match="max_delay_s"):
        FaceBatcher(max_batch=1, max_delay_s=-1.0)
