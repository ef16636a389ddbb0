"""Hand frames' face crops to classifier workers, and take them back from a worker that dies.

Workers pull work by credit: each announces how many frames it can hold, the
dispatcher sends at most that many unacknowledged frames, and every
acknowledgement returns one credit. A worker that stays silent longer than
`worker_timeout_s` is presumed dead and its unacknowledged frames go back to
the front of the backlog, so a crashed worker loses no frame. A slow worker
presumed dead may still deliver, so the sink must ignore a second result for
the same frame.

This module does the bookkeeping only. The detector stage moves the messages.
"""

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Generic, Hashable, TypeVar

logger = logging.getLogger(__name__)

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")


def worker_name(worker_id: bytes) -> str:
    """Return a worker's ZeroMQ identity as the text the worker logs, such as "host-123-1a2b3c4d"."""
    return worker_id.decode("ascii", errors="backslashreplace")


@dataclass
class WorkerState(Generic[Key, Item]):
    credits: int
    last_seen: float
    in_flight: OrderedDict[Key, Item] = field(default_factory=OrderedDict)


class WorkDispatcher(Generic[Key, Item]):
    """Credit-based assignment of frames to workers, with re-queueing on worker loss."""

    def __init__(self, worker_timeout_s: float):
        if worker_timeout_s <= 0:
            raise ValueError(f"worker_timeout_s must be above 0, got {worker_timeout_s}")
        self.worker_timeout_s = worker_timeout_s
        self.workers: dict[bytes, WorkerState[Key, Item]] = {}
        self.backlog: deque[tuple[Key, Item]] = deque()

    @property
    def in_flight(self) -> int:
        return sum(len(worker.in_flight) for worker in self.workers.values())

    def submit(self, key: Key, item: Item) -> None:
        """Queue one frame's work."""
        self.backlog.append((key, item))

    def worker_ready(self, worker_id: bytes, credits: int, now: float) -> None:
        """Register a worker, or add credit to a known one."""
        worker = self.workers.get(worker_id)
        if worker is None:
            logger.info("Classifier worker %s joined with %d credits", worker_name(worker_id), credits)
            self.workers[worker_id] = WorkerState(credits=credits, last_seen=now)
            return
        worker.credits += credits
        worker.last_seen = now

    def heartbeat(self, worker_id: bytes, now: float) -> bool:
        """Note that a worker is alive; return False for a worker that is not registered."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return False
        worker.last_seen = now
        return True

    def acknowledge(self, worker_id: bytes, keys: list[Key], now: float) -> int:
        """Mark frames as done by a worker and return its credits; return how many were in flight."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return 0
        worker.last_seen = now
        done = 0
        for key in keys:
            if worker.in_flight.pop(key, None) is not None:
                done += 1
        worker.credits += done
        return done

    def assign(self) -> list[tuple[bytes, Key, Item]]:
        """Pop backlog frames for workers with credit, spreading them round robin."""
        assignments = []
        while self.backlog:
            ready = [worker_id for worker_id, worker in self.workers.items() if worker.credits > 0]
            if not ready:
                break
            for worker_id in ready:
                if not self.backlog:
                    break
                key, item = self.backlog.popleft()
                worker = self.workers[worker_id]
                worker.credits -= 1
                worker.in_flight[key] = item
                assignments.append((worker_id, key, item))
        return assignments

    def remove_worker(self, worker_id: bytes, reason: str) -> int:
        """Forget a worker and put its unacknowledged frames back at the front of the backlog."""
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return 0
        requeued = list(worker.in_flight.items())
        self.backlog.extendleft(reversed(requeued))
        logger.warning(
            "Classifier worker %s removed (%s); %d frames in flight re-queued",
            worker_name(worker_id), reason, len(requeued),
        )
        return len(requeued)

    def expire(self, now: float) -> list[bytes]:
        """Remove every worker silent for longer than the timeout; return their ids."""
        expired = [
            worker_id
            for worker_id, worker in self.workers.items()
            if now - worker.last_seen > self.worker_timeout_s
        ]
        for worker_id in expired:
            self.remove_worker(worker_id, f"silent for more than {self.worker_timeout_s:.1f} s")
        return expired
