import logging
import time
import uuid

import msgpack
import numpy as np
import pytest
import zmq
from prometheus_client import REGISTRY

from common.logs import RateLimitedLog
from common.schema import EndOfStream, FaceCrops, Frame, decode, encode
from common.transport import (
    MAX_IPC_PATH_BYTES,
    EndpointError,
    Receiver,
    Sender,
    TransportError,
    decode_counted,
    default_endpoint,
    make_socket,
    recv_parts,
    send_parts,
    validate_endpoint,
)

TIMEOUT_MS = 5000


def frame(index: int = 0, shape=(36, 64, 3), seed: int = 0) -> Frame:
    pixels = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    return Frame("cam0", index, 1_700_000_000.0 + index, {"capture.sent": 1_700_000_000.5 + index}, pixels, fps=25.0)


def rejected_count(stage: str, reason: str) -> float:
    return REGISTRY.get_sample_value("emotion_messages_rejected_total", {"stage": stage, "reason": reason}) or 0.0


@pytest.mark.parametrize("endpoint", [
    "ipc:///tmp/emotion/frames.ipc",
    "ipc://relative.ipc",
    "tcp://127.0.0.1:7701",
    "tcp://localhost:1",
    "tcp://worker-3.example.org:65535",
    "tcp://[::1]:7701",
])
def test_validate_endpoint_accepts(endpoint):
    assert validate_endpoint(endpoint, bind=False) == endpoint


@pytest.mark.parametrize("endpoint", ["tcp://*:7701", "tcp://127.0.0.1:*", "tcp://*:*"])
def test_validate_endpoint_accepts_wildcards_for_bind(endpoint):
    assert validate_endpoint(endpoint, bind=True) == endpoint
    assert validate_endpoint(endpoint) == endpoint


@pytest.mark.parametrize("endpoint, words", [
    ("udp://127.0.0.1:7701", "unsupported transport"),
    ("inproc://frames", "unsupported transport"),
    ("127.0.0.1:7701", "unsupported transport"),
    ("", "unsupported transport"),
    ("ipc://", "missing the socket path"),
    ("tcp://127.0.0.1", "missing host or port"),
    ("tcp://:7701", "missing host or port"),
    ("tcp://127.0.0.1:0", "port '0'"),
    ("tcp://127.0.0.1:65536", "port '65536'"),
    ("tcp://127.0.0.1:http", "port 'http'"),
    ("tcp://bad host:7701", "not a host name"),
    ("tcp://a;b:7701", "not a host name"),
    ("tcp://*:7701", "concrete host"),
])
def test_validate_endpoint_rejects(endpoint, words):
    with pytest.raises(EndpointError) as caught:
        validate_endpoint(endpoint, bind=False)

    message = str(caught.value)
    assert repr(endpoint) in message
    assert words in message


def test_validate_endpoint_lists_accepted_forms():
    with pytest.raises(EndpointError, match=r"Expected ipc://PATH, tcp://HOST:PORT"):
        validate_endpoint("udp://127.0.0.1:7701")


def test_validate_endpoint_rejects_long_ipc_path():
    path = "/tmp/" + "d" * MAX_IPC_PATH_BYTES

    with pytest.raises(EndpointError, match=f"at most {MAX_IPC_PATH_BYTES}"):
        validate_endpoint(f"ipc://{path}")


def test_default_endpoint_is_ipc_in_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir("/tmp")

    assert default_endpoint(tmp_path, "frames") == f"ipc://{tmp_path}/frames.ipc"
    assert default_endpoint("run", "frames") == "ipc:///tmp/run/frames.ipc"


def test_default_endpoint_rejects_long_run_dir(tmp_path):
    with pytest.raises(EndpointError, match="shorter run folder"):
        default_endpoint(tmp_path / ("x" * 100), "frames")


def test_make_socket_sets_options(zmq_context, ipc_endpoint):
    socket = make_socket(zmq_context, zmq.PULL, ipc_endpoint("options"), bind=True, hwm=3)

    assert socket.getsockopt(zmq.LINGER) == 0
    assert socket.getsockopt(zmq.SNDHWM) == 3
    assert socket.getsockopt(zmq.RCVHWM) == 3
    assert socket.getsockopt(zmq.MAXMSGSIZE) > 0


def test_make_socket_identity_reaches_router(zmq_context, ipc_endpoint):
    endpoint = ipc_endpoint("identity")
    router = make_socket(zmq_context, zmq.ROUTER, endpoint, bind=True, hwm=4)
    dealer = make_socket(zmq_context, zmq.DEALER, endpoint, bind=False, hwm=4, identity=b"worker-7-abc")

    assert send_parts(dealer, [b"ready"], timeout_ms=TIMEOUT_MS)
    identity, payload = recv_parts(router, TIMEOUT_MS)

    assert identity.bytes == b"worker-7-abc"
    assert payload.bytes == b"ready"
    dealer.close()
    router.close()


@pytest.mark.parametrize("hwm", [0, -1, True, 2.5])
def test_make_socket_rejects_unbounded_hwm(zmq_context, ipc_endpoint, hwm):
    with pytest.raises(ValueError, match="hwm"):
        make_socket(zmq_context, zmq.PUSH, ipc_endpoint("hwm"), bind=True, hwm=hwm)


def test_make_socket_bind_failure_names_endpoint(zmq_context):
    first = make_socket(zmq_context, zmq.PULL, "tcp://127.0.0.1:*", bind=True, hwm=1)
    endpoint = first.getsockopt_string(zmq.LAST_ENDPOINT)

    with pytest.raises(TransportError) as caught:
        make_socket(zmq_context, zmq.PULL, endpoint, bind=True, hwm=1)

    assert endpoint in str(caught.value)
    assert "failed to bind PULL" in str(caught.value)


def test_make_socket_missing_ipc_folder(zmq_context, ipc_dir):
    endpoint = f"ipc://{ipc_dir}/missing/frames.ipc"

    with pytest.raises(TransportError, match="folder exists"):
        make_socket(zmq_context, zmq.PULL, endpoint, bind=True, hwm=1)


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_sender_to_receiver_round_trip(zmq_context, ipc_endpoint, transport):
    endpoint = ipc_endpoint("round-trip") if transport == "ipc" else "tcp://127.0.0.1:*"
    with Receiver(endpoint, bind=True, hwm=4, stage="test", context=zmq_context) as receiver, \
            Sender(receiver.endpoint, bind=False, hwm=4, stage="test", context=zmq_context) as sender:
        sent = frame(seed=1)

        assert sender.send(sent, timeout_ms=TIMEOUT_MS)
        received = receiver.recv(TIMEOUT_MS)

    assert isinstance(received, Frame)
    assert received.pixels.tobytes() == sent.pixels.tobytes()
    assert received.timestamps == sent.timestamps


def test_receiver_endpoint_reports_chosen_port(zmq_context):
    with Receiver("tcp://127.0.0.1:*", bind=True, hwm=1, stage="test", context=zmq_context) as receiver:
        host, port = receiver.endpoint.removeprefix("tcp://").rsplit(":", 1)

    assert host == "127.0.0.1"
    assert 1 <= int(port) <= 65535


def test_receiver_times_out_with_none(zmq_context, ipc_endpoint):
    with Receiver(ipc_endpoint("quiet"), bind=True, hwm=1, stage="test", context=zmq_context) as receiver:
        started = time.monotonic()
        received = receiver.recv(timeout_ms=100)
        elapsed = time.monotonic() - started

    assert received is None
    assert 0.09 <= elapsed < 2.0


def test_send_without_peer_returns_false(zmq_context, ipc_endpoint):
    with Sender(ipc_endpoint("nobody"), bind=True, hwm=1, stage="test", context=zmq_context) as sender:
        assert sender.send(frame(), block=False) is False
        started = time.monotonic()
        assert sender.send(frame(), timeout_ms=100) is False
        elapsed = time.monotonic() - started

    assert 0.09 <= elapsed < 2.0


def test_send_stops_at_high_water_mark(zmq_context, ipc_endpoint):
    """A receiver that reads nothing must make sends fail soon: no queue grows without bound."""
    endpoint = ipc_endpoint("full")
    with Receiver(endpoint, bind=True, hwm=2, stage="test", context=zmq_context) as receiver, \
            Sender(endpoint, bind=False, hwm=2, stage="test", context=zmq_context) as sender:
        big = frame(shape=(720, 1280, 3))
        accepted = 0
        deadline = time.monotonic() + 10
        while sender.send(big, timeout_ms=200) and time.monotonic() < deadline:
            accepted += 1

        # Both high-water marks, plus what the kernel's socket buffers hold: a few frames.
        assert accepted < 20
        assert receiver.recv(TIMEOUT_MS) is not None


def test_close_twice_is_safe(zmq_context, ipc_endpoint):
    sender = Sender(ipc_endpoint("close"), bind=True, hwm=1, stage="test", context=zmq_context)

    sender.close()
    sender.close()

    assert sender.socket.closed


def test_context_manager_closes_socket(zmq_context, ipc_endpoint):
    with Receiver(ipc_endpoint("with"), bind=True, hwm=1, stage="test", context=zmq_context) as receiver:
        pass

    assert receiver.socket.closed


def garbage_messages(valid: Frame) -> dict[str, list[list[bytes]]]:
    """Invalid messages by the reason each must be rejected with."""
    header, pixels = encode(valid)
    fields = msgpack.unpackb(header)
    return {
        "malformed": [[b"\xc1garbage"], [msgpack.packb([1, 2])], [header, bytes(pixels), b"extra"]],
        "truncated": [[header], [header, bytes(pixels)[:-1]]],
        "oversized": [[msgpack.packb({**fields, "arrays": [["pixels", "uint8", [70000, 70000]]]})]],
        "wrong_version": [[msgpack.packb({**fields, "version": 2}), bytes(pixels)]],
        "unknown_kind": [[msgpack.packb({**fields, "kind": "audio"}), bytes(pixels)]],
        "invalid_field": [[msgpack.packb({**fields, "frame_index": "seven"}), bytes(pixels)]],
    }


def test_receiver_counts_garbage_and_returns_next_good_message(zmq_context, ipc_endpoint):
    stage = f"test-{uuid.uuid4().hex[:8]}"
    endpoint = ipc_endpoint("garbage")
    valid = frame(index=7, seed=2)
    garbage = garbage_messages(valid)
    with Receiver(endpoint, bind=True, hwm=100, stage=stage, context=zmq_context) as receiver:
        raw = make_socket(zmq_context, zmq.PUSH, endpoint, bind=False, hwm=100)
        for messages in garbage.values():
            for parts in messages:
                assert send_parts(raw, parts, timeout_ms=TIMEOUT_MS)
        assert send_parts(raw, encode(valid), timeout_ms=TIMEOUT_MS)

        received = receiver.recv(TIMEOUT_MS)
        raw.close(linger=0)

    assert isinstance(received, Frame)
    assert received.frame_index == 7
    assert received.pixels.tobytes() == valid.pixels.tobytes()
    for reason, messages in garbage.items():
        assert rejected_count(stage, reason) == len(messages), reason


def test_receiver_garbage_only_times_out(zmq_context, ipc_endpoint):
    stage = f"test-{uuid.uuid4().hex[:8]}"
    endpoint = ipc_endpoint("garbage-only")
    with Receiver(endpoint, bind=True, hwm=10, stage=stage, context=zmq_context) as receiver:
        raw = make_socket(zmq_context, zmq.PUSH, endpoint, bind=False, hwm=10)
        assert send_parts(raw, [b"not a header"], timeout_ms=TIMEOUT_MS)

        received = receiver.recv(timeout_ms=300)
        raw.close(linger=0)

    assert received is None
    assert rejected_count(stage, "malformed") == 1


def test_rejected_messages_are_logged_with_rate_limit(zmq_context, ipc_endpoint, caplog):
    stage = f"test-{uuid.uuid4().hex[:8]}"
    endpoint = ipc_endpoint("flood")
    caplog.set_level(logging.WARNING, logger="common.transport")
    with Receiver(endpoint, bind=True, hwm=100, stage=stage, context=zmq_context) as receiver:
        raw = make_socket(zmq_context, zmq.PUSH, endpoint, bind=False, hwm=100)
        for _ in range(30):
            assert send_parts(raw, [b"\xc1"], timeout_ms=TIMEOUT_MS)
        assert send_parts(raw, encode(EndOfStream("cam0", 3, 1.0, {}, "end of file")), timeout_ms=TIMEOUT_MS)

        assert isinstance(receiver.recv(TIMEOUT_MS), EndOfStream)
        raw.close(linger=0)

    lines = [record for record in caplog.records if stage in record.getMessage()]
    assert rejected_count(stage, "malformed") == 30
    assert 1 <= len(lines) <= 6
    assert "malformed" in lines[0].getMessage()


def test_router_dealer_with_helpers(zmq_context, ipc_endpoint):
    endpoint = ipc_endpoint("crops")
    router = make_socket(zmq_context, zmq.ROUTER, endpoint, bind=True, hwm=4)
    dealer = make_socket(zmq_context, zmq.DEALER, endpoint, bind=False, hwm=4)
    crops = FaceCrops("cam0", 3, 1.0, {}, np.array([[1, 2, 48, 48]], np.int32), np.full((1, 48, 48), 9, np.uint8))

    assert send_parts(dealer, encode(crops), timeout_ms=TIMEOUT_MS)
    identity, *parts = recv_parts(router, TIMEOUT_MS)
    received = decode_counted(parts, "test", "dealer")
    assert send_parts(router, [identity.bytes, *encode(crops)], timeout_ms=TIMEOUT_MS)
    answer = decode(recv_parts(dealer, TIMEOUT_MS))
    router.close(linger=0)
    dealer.close(linger=0)

    assert isinstance(received, FaceCrops)
    assert np.array_equal(received.crops, crops.crops)
    assert answer.frame_index == 3


def test_recv_parts_times_out(zmq_context, ipc_endpoint):
    socket = make_socket(zmq_context, zmq.PULL, ipc_endpoint("nothing"), bind=True, hwm=1)

    assert recv_parts(socket, 50) is None


def test_frame_crosses_processes_intact(start_process, ipc_endpoint, zmq_context):
    """A full HD frame goes to another process and back, with its pixels and timestamps."""
    to_echo, from_echo = ipc_endpoint("to-echo"), ipc_endpoint("from-echo")
    with Receiver(from_echo, bind=True, hwm=4, stage="test", context=zmq_context) as receiver, \
            Sender(to_echo, bind=False, hwm=4, stage="test", context=zmq_context) as sender:
        echo = start_process("echo_stage.py", to_echo, from_echo)
        sent = frame(index=41, shape=(1080, 1920, 3), seed=3)

        assert sender.send(sent, timeout_ms=20_000)
        received = receiver.recv(20_000)
        assert sender.send(EndOfStream("cam0", 42, 2.0, {}, "end of file"), timeout_ms=20_000)
        exit_code = echo.wait(timeout=20)

    assert exit_code == 0, echo.stderr.read()
    assert isinstance(received, Frame)
    assert received.frame_index == 41
    assert received.pixels.shape == (1080, 1920, 3)
    assert received.pixels.tobytes() == sent.pixels.tobytes()
    assert received.fps == 25.0
    assert {key: received.timestamps[key] for key in sent.timestamps} == sent.timestamps
    assert sent.timestamps["capture.sent"] < received.timestamps["echo.received"] < time.time() + 1


def test_rate_limited_log_burst_then_interval(caplog):
    now = [100.0]
    log = RateLimitedLog(logging.getLogger("test.rate"), burst=2, interval_s=10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="test.rate")

    written = [log.warning("bad message %d", index) for index in range(5)]
    now[0] += 10.0
    written.append(log.warning("bad message %d", 5))

    assert written == [True, True, False, False, False, True]
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["bad message 0", "bad message 1", "bad message 5 (3 similar lines suppressed)"]


def test_rate_limited_log_rejects_bad_settings():
    with pytest.raises(ValueError, match="interval_s"):
        RateLimitedLog(logging.getLogger("test.rate"), interval_s=0)
