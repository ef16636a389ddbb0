"""Control messages between the detector's work dispatcher and the classifier workers.

The detector binds a ROUTER socket and each worker connects a DEALER. Work goes
out as `FaceCrops` messages (see common.schema). The workers reply with
one-part control messages, each a msgpack map:

- `{"kind": "worker_ready", "version": 1, "credits": N}`: the worker joined
  and can hold N more frames;
- `{"kind": "worker_done", "version": 1, "frames": [[source_id, frame_index], ...]}`:
  the worker sent these frames' classifications to the sink, so each returns
  one credit;
- `{"kind": "heartbeat", "version": 1, "credits": N}`: the worker is alive and
  has N free credits, which lets a restarted detector adopt a running worker.

Decoding validates every field and raises only `MessageError`.
"""

from dataclasses import dataclass

import msgpack

from common.schema import MAX_FACES, MAX_STRING_BYTES, SCHEMA_VERSION, MessageError

MAX_CONTROL_BYTES = 64 * 1024
MAX_CREDITS = 100_000


@dataclass(frozen=True)
class WorkerReady:
    credits: int


@dataclass(frozen=True)
class WorkerDone:
    frames: list[tuple[str, int]]


@dataclass(frozen=True)
class Heartbeat:
    credits: int


ControlMessage = WorkerReady | WorkerDone | Heartbeat


def encode_control(message: ControlMessage) -> list[bytes]:
    """Encode a control message as one ZeroMQ part."""
    if isinstance(message, WorkerReady):
        header = {"kind": "worker_ready", "credits": message.credits}
    elif isinstance(message, Heartbeat):
        header = {"kind": "heartbeat", "credits": message.credits}
    elif isinstance(message, WorkerDone):
        header = {"kind": "worker_done", "frames": [[source, index] for source, index in message.frames]}
    else:
        raise TypeError(f"expected a control message, got {type(message).__name__}")
    header["version"] = SCHEMA_VERSION
    return [msgpack.packb(header, use_bin_type=True)]


def decode_control(parts: list) -> ControlMessage:
    """Decode and validate a one-part control message; raise MessageError if it is not one."""
    if len(parts) != 1:
        raise MessageError("malformed", f"a control message has 1 part, got {len(parts)}")
    payload = memoryview(parts[0]).tobytes() if not isinstance(parts[0], bytes) else parts[0]
    if len(payload) > MAX_CONTROL_BYTES:
        raise MessageError("oversized", f"control message of {len(payload)} bytes, limit {MAX_CONTROL_BYTES}")
    try:
        header = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_str_len=MAX_STRING_BYTES,
                                 max_array_len=MAX_FACES * 8, max_map_len=16, max_bin_len=0, max_ext_len=0)
    except Exception as error:  # msgpack raises several unrelated types for bad bytes
        raise MessageError("malformed", f"control message is not msgpack: {error}") from None
    if not isinstance(header, dict):
        raise MessageError("malformed", "control message is not a map")

    version = header.get("version")
    if version != SCHEMA_VERSION:
        raise MessageError("wrong_version", f"expected version {SCHEMA_VERSION}, got {version!r}")

    kind = header.get("kind")
    if kind == "worker_ready":
        return WorkerReady(check_credits(header))
    if kind == "heartbeat":
        return Heartbeat(check_credits(header))
    if kind == "worker_done":
        return WorkerDone(check_frames(header))
    raise MessageError("unknown_kind", f"unknown control message kind {kind!r}")


def check_credits(header: dict) -> int:
    credits = header.get("credits")
    if isinstance(credits, bool) or not isinstance(credits, int) or not 0 <= credits <= MAX_CREDITS:
        raise MessageError("invalid_field", f"credits must be a whole number from 0 to {MAX_CREDITS}, got {credits!r}")
    return credits


def check_frames(header: dict) -> list[tuple[str, int]]:
    frames = header.get("frames")
    if not isinstance(frames, list) or len(frames) > MAX_FACES:
        raise MessageError("invalid_field", f"frames must be a list of at most {MAX_FACES} entries")
    checked = []
    for entry in frames:
        if (
            not isinstance(entry, list) or len(entry) != 2
            or not isinstance(entry[0], str) or isinstance(entry[1], bool) or not isinstance(entry[1], int)
            or entry[1] < 0
        ):
            raise MessageError("invalid_field", f"each frame must be [source_id, frame_index], got {entry!r}")
        checked.append((entry[0], entry[1]))
    return checked
