"""Collect face crops from many frames into batches by size and deadline.

A batch is due when `max_batch` faces wait or when the oldest waiting face has
waited `max_delay_s`. A frame's faces always stay in one batch, so one
inference call yields every result a frame needs. A single frame with more
faces than `max_batch` forms a batch of its own.
"""

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np


class HasCrops(Protocol):
    crops: np.ndarray  # uint8, shape (N, S, S)


Item = TypeVar("Item", bound=HasCrops)


@dataclass(frozen=True)
class Batch(Generic[Item]):
    """Frames whose crops were stacked into one array for one inference call."""

    items: list[Item]
    crops: np.ndarray  # uint8, shape (sum of faces, S, S)
    oldest_arrival: float  # monotonic seconds

    def split(self, outputs: np.ndarray) -> list[np.ndarray]:
        """Cut per-face outputs of the whole batch back into one array per frame."""
        counts = [len(item.crops) for item in self.items]
        return np.split(outputs, np.cumsum(counts)[:-1])


class FaceBatcher(Generic[Item]):
    """A queue of frames' crops that releases batches by size and deadline."""

    def __init__(self, max_batch: int, max_delay_s: float):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_delay_s < 0:
            raise ValueError(f"max_delay_s must be at least 0, got {max_delay_s}")
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._pending: deque[tuple[Item, float]] = deque()
        self._pending_faces = 0

    @property
    def pending_faces(self) -> int:
        return self._pending_faces

    @property
    def pending_frames(self) -> int:
        return len(self._pending)

    def add(self, item: Item, now: float) -> None:
        """Queue one frame's crops; `now` is its arrival in monotonic seconds."""
        self._pending.append((item, now))
        self._pending_faces += len(item.crops)

    def seconds_until_due(self, now: float) -> float | None:
        """Return how long until a batch is due: 0 when one is due now, None when nothing waits."""
        if not self._pending:
            return None
        if self._pending_faces >= self.max_batch:
            return 0.0
        oldest_arrival = self._pending[0][1]
        return max(0.0, oldest_arrival + self.max_delay_s - now)

    def take(self, now: float, force: bool = False) -> Batch[Item] | None:
        """Remove and return the next batch if it is due (or `force` is set), else None."""
        wait = self.seconds_until_due(now)
        if wait is None or (wait > 0 and not force):
            return None

        items: list[Item] = []
        faces = 0
        oldest_arrival = self._pending[0][1]
        while self._pending:
            item, _ = self._pending[0]
            if items and faces + len(item.crops) > self.max_batch:
                break
            self._pending.popleft()
            items.append(item)
            faces += len(item.crops)

        self._pending_faces -= faces
        return Batch(items, stack_crops(items), oldest_arrival)


def stack_crops(items: Sequence[HasCrops]) -> np.ndarray:
    arrays = [item.crops for item in items if len(item.crops)]
    if not arrays:
        shape = items[0].crops.shape[1:] if items else (0, 0)
        return np.zeros((0, *shape), dtype=np.uint8)
    return np.concatenate(arrays)
