import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.schema import REJECT_REASONS, MessageError
from common.work import Heartbeat, WorkerDone, WorkerReady, decode_control, encode_control


@pytest.mark.parametrize(
    "message",
    [WorkerReady(64), Heartbeat(0), WorkerDone([("cam-1", 0), ("cam-2", 2**40)]), WorkerDone([])],
)
def test_control_round_trip(message):
    assert decode_control(encode_control(message)) == message


def packed(**fields) -> list[bytes]:
    return [msgpack.packb(fields)]


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ([], "malformed"),
        ([b"a", b"b"], "malformed"),
        ([b"\xc1"], "malformed"),
        ([msgpack.packb([1, 2])], "malformed"),
        ([b"x" * 70_000], "oversized"),
        (packed(kind="worker_ready", version=2, credits=1), "wrong_version"),
        (packed(kind="shutdown", version=1), "unknown_kind"),
        (packed(kind="worker_ready", version=1, credits=-1), "invalid_field"),
        (packed(kind="worker_ready", version=1, credits=True), "invalid_field"),
        (packed(kind="heartbeat", version=1), "invalid_field"),
        (packed(kind="worker_done", version=1, frames=[["cam", -1]]), "invalid_field"),
        (packed(kind="worker_done", version=1, frames=[[1, 2]]), "invalid_field"),
        (packed(kind="worker_done", version=1, frames="cam"), "invalid_field"),
    ],
)
def test_bad_control_rejected(parts, reason):
    with pytest.raises(MessageError) as raised:
        decode_control(parts)
    assert raised.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=256), max_size=3))
def test_random_bytes_only_raise_message_error(parts):
    try:
        decode_control(parts)
    except MessageError as error:
        assert error.reason in REJECT_REASONS
