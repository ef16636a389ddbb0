import pytest

from detector.dispatch import WorkDispatcher

ALPHA = b"\x00alpha"
BETA = b"\x00beta"


def test_assign_respects_worker_credits():
    dispatcher = WorkDispatcher(worker_timeout_s=3.0)
    dispatcher.worker_ready(ALPHA, credits=2, now=0.0)
    for index in range(5):
        dispatcher.submit(("cam", index), f"frame {index}")

    assignments = dispatcher.assign()

    assert [key for _, key, _ in assignments] == [("cam", 0), ("cam", 1)]
    assert len(dispatcher.backlog) == 3
    assert dispatcher.assign() == []


def test_acknowledge_returns_credit():
    dispatcher = WorkDispatcher(worker_timeout_s=3.0)
    dispatcher.worker_ready(ALPHA, credits=1, now=0.0)
    dispatcher.submit(("cam", 0), "first")
    dispatcher.submit(("cam", 1), "second")
    dispatcher.assign()

    done = dispatcher.acknowledge(ALPHA, [("cam", 0)], now=0.5)

    assert done == 1
    assert [key for _, key, _ in dispatcher.assign()] == [("cam", 1)]


def test_work_spread_round_robin():
    dispatcher = WorkDispatcher(worker_timeout_s=3.0)
    dispatcher.worker_ready(ALPHA, credits=4, now=0.0)
    dispatcher.worker_ready(BETA, credits=4, now=0.0)
    for index in range(4):
        dispatcher.submit(("cam", index), index)

    workers = [worker_id for worker_id, _, _ in dispatcher.assign()]

    assert workers == [ALPHA, BETA, ALPHA, BETA]


def test_silent_worker_frames_requeued_in_order():
    dispatcher = WorkDispatcher(worker_timeout_s=3.0)
    dispatcher.worker_ready(ALPHA, credits=2, now=0.0)
    for index in range(3):
        dispatcher.submit(("cam", index), index)
    dispatcher.assign()

    assert dispatcher.expire(now=2.0) == []
    assert dispatcher.expire(now=3.5) == [ALPHA]

    assert [key for key, _ in dispatcher.backlog] == [("cam", 0), ("cam", 1), ("cam", 2)]
    assert dispatcher.in_flight == 0


def test_requeued_frames_go_to_surviving_worker():
    dispatcher = WorkDispatcher(worker_timeout_s=3.0)
    dispatcher.worker_ready(ALPHA, credits=1, now=0.0)
    dispatcher.worker_ready(BETA, credits=1, now=0.0)
    dispatcher.submit(("cam", 0), 0)
    dispatcher.submit(("cam", 1), 1)
    dispatcher.assign()

    dispatcher.heartbeat(BETA, now=3.0)
    dispatcher.acknowledge(BETA, [("cam", 1)], now=3.0)
    dispatcher.expire(now=3.5)
    reassigned = dispatcher.assign()

    assert reassigned == [(BETA, ("cam", 0), 0)]


def test_unknown_worker_ignored():
    dispatcher = WorkDispatcher(worker_timeout_s=3.0)

    assert dispatcher.heartbeat(ALPHA, now=0.0) is False
    assert dispatcher.acknowledge(ALPHA, [("cam", 0)], now=0.0) == 0
    assert dispatcher.remove_worker(ALPHA, "test") == 0


def test_invalid_timeout_rejected():
    with pytest.raises(ValueError, match="worker_timeout_s"):
        WorkDispatcher(worker_timeout_s=0)


def test_worker_name_is_readable_identity():
    from detector.dispatch import worker_name

    assert worker_name(b"host-12-1a2b3c4d") == "host-12-1a2b3c4d"
    assert worker_name(b"bad-\xff") == "bad-\\xff"
