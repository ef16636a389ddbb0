"""Versioned pipeline messages and their ZeroMQ wire format.

A message travels as a list of ZeroMQ parts. Part 0 is a msgpack map (the
header) with `kind`, `version`, the header fields every kind shares
(`source_id`, `frame_index`, `capture_time`, `timestamps`), the kind's other
scalar fields, and `arrays`: one `[name, dtype, shape]` entry per array field,
in the kind's fixed order. Each array's raw bytes (C order, little-endian)
follow as one more part. Nothing is ever pickled.

`decode` validates everything it reads and raises only `MessageError`, whose
`reason` is one of `REJECT_REASONS`:

- `malformed`: the parts are not a message: header not msgpack or not a map,
  a part that is not a buffer, extra parts, an array part longer than declared.
- `truncated`: no parts, fewer parts than declared arrays, or an array part
  shorter than its declared shape and dtype need.
- `oversized`: a header part, an array, a string or a count beyond the limits below.
- `wrong_version`: `version` is an integer other than `SCHEMA_VERSION`.
- `unknown_kind`: `kind` names no message kind.
- `invalid_field`: a missing, unknown or mistyped field, a dtype outside the
  whitelist, a shape that does not fit the field, or counts that disagree
  (for example 3 boxes but 2 crops).

The same checks run when a message is constructed, so a stage cannot send what
a receiver would reject. Arrays returned by `decode` are read-only views of the
received parts (no copy); call `.copy()` before drawing on them.
"""

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack
import numpy as np

SCHEMA_VERSION = 1

REJECT_REASONS = ("malformed", "truncated", "oversized", "wrong_version", "unknown_kind", "invalid_field")

# Limits. A frame is at most 8192 px on a side (8K video is 7680x4320) and at
# most 256 MiB of pixels, so 8192x8192 with 4 channels of uint8 fits and a
# uint16 frame of that size does not. Receivers also cap each ZeroMQ part at
# MAX_ARRAY_BYTES (ZMQ_MAXMSGSIZE), so a larger part never reaches `decode`.
MAX_FRAME_SIDE = 8192
MAX_ARRAY_BYTES = 8192 * 8192 * 4
MAX_FACES = 1024  # boxes, rejected boxes or crops in one message
MAX_CROP_SIDE = 512
MAX_CLASSES = 256
MAX_TIMESTAMPS = 64
MAX_STRING_BYTES = 256  # UTF-8 bytes of any string: ids, labels, reasons, timestamp keys
# 1024 rejected-box reasons of 256 bytes each fit, with room for the other fields.
MAX_HEADER_BYTES = 320 * 1024
MAX_FPS = 10_000.0
MAX_INDEX = 2**63 - 1

# Wire dtypes by header name. Arrays always travel little-endian.
WIRE_DTYPES = {
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "int32": np.dtype("<i4"),
    "float32": np.dtype("<f4"),
}


class MessageError(ValueError):
    """A message that cannot be decoded or sent, with a `reason` from `REJECT_REASONS`."""

    def __init__(self, reason: str, detail: str):
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown reject reason {reason!r}, expected one of {REJECT_REASONS}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# Field checks. Each raises MessageError("invalid_field" or "oversized") and
# tests types before comparing, so no input can raise anything else.


def _check_string(name: str, value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise MessageError("invalid_field", f"{name} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise MessageError("invalid_field", f"{name} must not be empty")
    size = len(value.encode("utf-8", errors="surrogatepass"))
    if size > MAX_STRING_BYTES:
        raise MessageError("oversized", f"{name} is {size} bytes of UTF-8, the limit is {MAX_STRING_BYTES}")
    return value


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError("invalid_field", f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise MessageError("invalid_field", f"{name} must be from {low} to {high}, got {value}")
    return value


def _check_float(name: str, value: object, *, low: float = -math.inf, high: float = math.inf) -> float:
    # msgpack keeps 3 and 3.0 apart, so an integer is accepted where a float is expected.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError("invalid_field", f"{name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise MessageError("invalid_field", f"{name} is out of the float range") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise MessageError("invalid_field", f"{name} must be a finite number from {low} to {high}, got {number}")
    return number


def _check_strings(name: str, value: object, limit: int) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise MessageError("invalid_field", f"{name} must be a list of strings, got {type(value).__name__}")
    if len(value) > limit:
        raise MessageError("oversized", f"{name} has {len(value)} entries, the limit is {limit}")
    return [_check_string(f"{name}[{i}]", item) for i, item in enumerate(value)]


def _check_timestamps(value: object) -> dict[str, float]:
    if not isinstance(value, dict):
        raise MessageError("invalid_field", f"timestamps must be a map of str to float, got {type(value).__name__}")
    if len(value) > MAX_TIMESTAMPS:
        raise MessageError("oversized", f"timestamps has {len(value)} entries, the limit is {MAX_TIMESTAMPS}")
    return {
        _check_string("timestamps key", key): _check_float(f"timestamps[{key!r}]", when)
        for key, when in value.items()
    }


def _check_array(name: str, value: object, dtypes: tuple[str, ...], ndims: tuple[int, ...]) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise MessageError("invalid_field", f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype.name not in dtypes or value.dtype.byteorder == ">":
        raise MessageError("invalid_field", f"{name} must have dtype {' or '.join(dtypes)}, got {value.dtype}")
    if value.ndim not in ndims:
        raise MessageError("invalid_field", f"{name} must have {' or '.join(map(str, ndims))} dimensions, "
                                            f"got shape {value.shape}")
    if value.nbytes > MAX_ARRAY_BYTES:
        raise MessageError("oversized", f"{name} is {value.nbytes} bytes, the limit is {MAX_ARRAY_BYTES}")
    return value


def _check_boxes(name: str, value: object) -> np.ndarray:
    boxes = _check_array(name, value, ("int32",), (2,))
    if boxes.shape[1] != 4:
        raise MessageError("invalid_field", f"{name} must have shape (N, 4) for x, y, w, h, got {boxes.shape}")
    if boxes.shape[0] > MAX_FACES:
        raise MessageError("oversized", f"{name} has {boxes.shape[0]} boxes, the limit is {MAX_FACES}")
    return boxes


def _check_pixels(value: object) -> np.ndarray:
    pixels = _check_array("pixels", value, ("uint8", "uint16"), (2, 3))
    height, width = pixels.shape[:2]
    if not (1 <= height <= MAX_FRAME_SIDE and 1 <= width <= MAX_FRAME_SIDE):
        raise MessageError("invalid_field", f"pixels must be 1 to {MAX_FRAME_SIDE} px on each side, "
                                            f"got shape {pixels.shape}")
    if pixels.ndim == 3 and pixels.shape[2] not in (1, 3, 4):
        raise MessageError("invalid_field", f"pixels must have 1, 3 or 4 channels, got shape {pixels.shape}")
    return pixels


def _check_fps(value: object) -> float | None:
    if value is None:
        return None
    fps = _check_float("fps", value, low=0.0, high=MAX_FPS)
    if fps == 0:
        raise MessageError("invalid_field", "fps must be above 0, or None when unknown, got 0")
    return fps


def empty_boxes() -> np.ndarray:
    """Return a (0, 4) int32 box array, for a frame without faces."""
    return np.zeros((0, 4), dtype=np.int32)


@dataclass(frozen=True, eq=False)
class _Message:
    """Header fields every message kind carries."""

    kind: ClassVar[str]
    array_fields: ClassVar[tuple[str, ...]]

    source_id: str
    frame_index: int
    capture_time: float
    timestamps: dict[str, float]

    def __post_init__(self) -> None:
        _check_string("source_id", self.source_id)
        _check_int("frame_index", self.frame_index, 0, MAX_INDEX)
        self._set("capture_time", _check_float("capture_time", self.capture_time, low=0.0))
        self._set("timestamps", _check_timestamps(self.timestamps))

    def _set(self, name: str, value: Any) -> None:
        # Frozen dataclasses allow setting fields only through object.__setattr__.
        object.__setattr__(self, name, value)


@dataclass(frozen=True, eq=False)
class Frame(_Message):
    """One decoded video frame, with uint8 or uint16 pixels of shape (H, W) or (H, W, C)."""

    kind: ClassVar[str] = "frame"
    array_fields: ClassVar[tuple[str, ...]] = ("pixels",)

    pixels: np.ndarray
    fps: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_pixels(self.pixels)
        self._set("fps", _check_fps(self.fps))


@dataclass(frozen=True, eq=False)
class DetectedFrame(_Message):
    """A frame with its faces, from the detector to the sink. Boxes are (N, 4) int32 x, y, w, h."""

    kind: ClassVar[str] = "detected_frame"
    array_fields: ClassVar[tuple[str, ...]] = ("pixels", "boxes", "rejected_boxes")

    pixels: np.ndarray
    fps: float | None
    boxes: np.ndarray
    rejected_boxes: np.ndarray = field(default_factory=empty_boxes)
    rejected_reasons: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_pixels(self.pixels)
        self._set("fps", _check_fps(self.fps))
        _check_boxes("boxes", self.boxes)
        _check_boxes("rejected_boxes", self.rejected_boxes)
        self._set("rejected_reasons", _check_strings("rejected_reasons", self.rejected_reasons, MAX_FACES))
        if len(self.rejected_reasons) != len(self.rejected_boxes):
            raise MessageError("invalid_field", f"{len(self.rejected_boxes)} rejected boxes need as many "
                                                f"rejected_reasons, got {len(self.rejected_reasons)}")


@dataclass(frozen=True, eq=False)
class FaceCrops(_Message):
    """Face crops of one frame, from the detector to the classifier, as (N, S, S) uint8."""

    kind: ClassVar[str] = "face_crops"
    array_fields: ClassVar[tuple[str, ...]] = ("boxes", "crops")

    boxes: np.ndarray
    crops: np.ndarray

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_boxes("boxes", self.boxes)
        crops = _check_array("crops", self.crops, ("uint8",), (3,))
        count, height, width = crops.shape
        if height != width or not 1 <= height <= MAX_CROP_SIDE:
            raise MessageError("invalid_field", f"crops must be square, 1 to {MAX_CROP_SIDE} px, "
                                                f"got shape {crops.shape}")
        if count != len(self.boxes):
            raise MessageError("invalid_field", f"{len(self.boxes)} boxes need as many crops, got {count}")


@dataclass(frozen=True, eq=False)
class Classifications(_Message):
    """Emotion probabilities of the faces of one frame, from a classifier worker to the sink."""

    kind: ClassVar[str] = "classifications"
    array_fields: ClassVar[tuple[str, ...]] = ("boxes", "probabilities")

    boxes: np.ndarray
    probabilities: np.ndarray
    labels: list[str]
    worker_id: str

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_boxes("boxes", self.boxes)
        probabilities = _check_array("probabilities", self.probabilities, ("float32",), (2,))
        self._set("labels", _check_strings("labels", self.labels, MAX_CLASSES))
        _check_string("worker_id", self.worker_id)
        count, classes = probabilities.shape
        if count != len(self.boxes):
            raise MessageError("invalid_field", f"{len(self.boxes)} boxes need as many probability rows, "
                                                f"got {count}")
        if classes != len(self.labels) or classes == 0:
            raise MessageError("invalid_field", f"probabilities have {classes} columns but there are "
                                                f"{len(self.labels)} labels")
        if not np.all((probabilities >= 0) & (probabilities <= 1)):
            raise MessageError("invalid_field", "probabilities must be finite and from 0 to 1")


@dataclass(frozen=True, eq=False)
class EndOfStream(_Message):
    """The end of a source. Its `frame_index` is the number of frames the source produced."""

    kind: ClassVar[str] = "end_of_stream"
    array_fields: ClassVar[tuple[str, ...]] = ()

    reason: str

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_string("reason", self.reason)


Message = Frame | DetectedFrame | FaceCrops | Classifications | EndOfStream

MESSAGE_TYPES: dict[str, type[_Message]] = {
    cls.kind: cls for cls in (Frame, DetectedFrame, FaceCrops, Classifications, EndOfStream)
}

_HEADER_ONLY_KEYS = ("kind", "version", "arrays")


def stamp(message: Message, key: str, when: float | None = None) -> Message:
    """Return a copy of `message` with `timestamps[key]` set to `when` (default: now, Unix seconds)."""
    timestamps = {**message.timestamps, key: time.time() if when is None else when}
    return dataclasses.replace(message, timestamps=timestamps)


def encode(message: Message) -> list[bytes | np.ndarray]:
    """Encode `message` as ZeroMQ parts: the msgpack header, then one part per array.

    Arrays that are already C-contiguous little-endian go out as they are, with no
    copy, so the caller must not change them while the parts are being sent.
    """
    if not isinstance(message, tuple(MESSAGE_TYPES.values())):
        raise TypeError(f"expected one of {', '.join(t.__name__ for t in MESSAGE_TYPES.values())}, "
                        f"got {type(message).__name__}")
    header: dict[str, Any] = {"kind": message.kind, "version": SCHEMA_VERSION}
    arrays = []
    descriptors = []
    for item in dataclasses.fields(message):
        value = getattr(message, item.name)
        if item.name in message.array_fields:
            wire = np.ascontiguousarray(value, dtype=WIRE_DTYPES[value.dtype.name])
            arrays.append(wire)
            descriptors.append([item.name, value.dtype.name, list(wire.shape)])
        else:
            header[item.name] = value
    header["arrays"] = descriptors
    return [msgpack.packb(header, use_bin_type=True), *arrays]


def decode(parts: object) -> Message:
    """Decode and validate ZeroMQ parts into a message, raising `MessageError` on any bad input.

    Accepts bytes, bytearray, memoryview and zmq.Frame parts (any object with a
    buffer). Arrays are read-only views of the parts.
    """
    if not isinstance(parts, (list, tuple)):
        raise MessageError("malformed", f"expected a list of parts, got {type(parts).__name__}")
    if not parts:
        raise MessageError("truncated", "no parts")
    buffers = [_as_bytes_view(index, part) for index, part in enumerate(parts)]

    header = _unpack_header(buffers[0])
    message_type = _check_kind_and_version(header)
    descriptors = _check_descriptors(header.get("arrays"), message_type)

    expected_parts = 1 + len(descriptors)
    if len(buffers) < expected_parts:
        raise MessageError("truncated", f"{message_type.kind} needs {expected_parts} parts, got {len(buffers)}")
    if len(buffers) > expected_parts:
        raise MessageError("malformed", f"{message_type.kind} needs {expected_parts} parts, got {len(buffers)}")

    values = {key: value for key, value in header.items() if key not in _HEADER_ONLY_KEYS}
    field_names = {item.name for item in dataclasses.fields(message_type)}
    scalar_names = field_names - set(message_type.array_fields)
    unknown = sorted(set(values) - scalar_names, key=str)
    if unknown:
        raise MessageError("invalid_field", f"unknown header fields for {message_type.kind}: {unknown!r}")
    missing = sorted(scalar_names - set(values))
    if missing:
        raise MessageError("invalid_field", f"missing header fields for {message_type.kind}: {missing}")

    for (name, dtype, shape), buffer in zip(descriptors, buffers[1:]):
        values[name] = _array_from_buffer(name, dtype, shape, buffer)
    try:
        return message_type(**values)
    except TypeError as error:
        # Only a missing or unexpected argument gets here, and the checks above exclude both.
        raise MessageError("invalid_field", str(error)) from None


def _as_bytes_view(index: int, part: object) -> memoryview:
    buffer = getattr(part, "buffer", part)  # zmq.Frame exposes its bytes as .buffer
    try:
        view = memoryview(buffer)
        if view.nbytes == 0:
            return memoryview(b"")  # memoryview.cast rejects views with a zero in their shape
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except (TypeError, ValueError, BufferError) as error:
        raise MessageError("malformed", f"part {index} is not a contiguous buffer "
                                        f"({type(part).__name__}: {error})") from None


def _unpack_header(view: memoryview) -> dict:
    if len(view) > MAX_HEADER_BYTES:
        raise MessageError("oversized", f"header is {len(view)} bytes, the limit is {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(
            view, raw=False, strict_map_key=True, use_list=True,
            max_str_len=MAX_STRING_BYTES, max_bin_len=0, max_ext_len=0,
            max_array_len=MAX_FACES, max_map_len=MAX_TIMESTAMPS,
        )
    except (msgpack.UnpackException, ValueError, TypeError) as error:
        # msgpack raises ValueError subclasses for bad or incomplete data and limits,
        # and TypeError for an unhashable map key.
        raise MessageError("malformed", f"header is not valid msgpack within the limits: {error}") from None
    if not isinstance(header, dict):
        raise MessageError("malformed", f"header must be a msgpack map, got {type(header).__name__}")
    return header


def _check_kind_and_version(header: dict) -> type[_Message]:
    # The version comes first: another version may name its kinds differently.
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise MessageError("invalid_field", f"version must be an integer, got {type(version).__name__}")
    if version != SCHEMA_VERSION:
        raise MessageError("wrong_version", f"expected schema version {SCHEMA_VERSION}, got {version}")
    kind = header.get("kind")
    if not isinstance(kind, str):
        raise MessageError("invalid_field", f"kind must be a string, got {type(kind).__name__}")
    if kind not in MESSAGE_TYPES:
        raise MessageError("unknown_kind", f"unknown kind {kind!r}, expected one of {sorted(MESSAGE_TYPES)}")
    return MESSAGE_TYPES[kind]


def _check_descriptors(arrays: object, message_type: type[_Message]) -> list[tuple[str, str, tuple[int, ...]]]:
    expected = message_type.array_fields
    if not isinstance(arrays, list) or len(arrays) != len(expected):
        raise MessageError("invalid_field", f"arrays must list {len(expected)} entries {list(expected)} "
                                            f"for {message_type.kind}, got {arrays!r:.200}")
    descriptors = []
    for name, entry in zip(expected, arrays):
        if not (isinstance(entry, list) and len(entry) == 3 and entry[0] == name):
            raise MessageError("invalid_field", f"arrays entry for {name} must be [{name!r}, dtype, shape], "
                                                f"got {entry!r:.200}")
        _, dtype, shape = entry
        if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
            raise MessageError("invalid_field", f"{name} dtype must be one of {sorted(WIRE_DTYPES)}, got {dtype!r}")
        if not isinstance(shape, list) or not 1 <= len(shape) <= 3:
            raise MessageError("invalid_field", f"{name} shape must be a list of 1 to 3 sizes, got {shape!r}")
        size = WIRE_DTYPES[dtype].itemsize
        for dim in shape:
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
                raise MessageError("invalid_field", f"{name} shape must hold sizes of at least 0, got {shape!r}")
            size *= dim
        if size > MAX_ARRAY_BYTES:
            raise MessageError("oversized", f"{name} of shape {shape} and dtype {dtype} is {size} bytes, "
                                            f"the limit is {MAX_ARRAY_BYTES}")
        descriptors.append((name, dtype, tuple(shape)))
    return descriptors


def _array_from_buffer(name: str, dtype: str, shape: tuple[int, ...], buffer: memoryview) -> np.ndarray:
    wire = WIRE_DTYPES[dtype]
    expected = wire.itemsize * math.prod(shape)
    if len(buffer) < expected:
        raise MessageError("truncated", f"{name} of shape {shape} and dtype {dtype} needs {expected} bytes, "
                                        f"got {len(buffer)}")
    if len(buffer) > expected:
        raise MessageError("malformed", f"{name} of shape {shape} and dtype {dtype} needs {expected} bytes, "
                                        f"got {len(buffer)}")
    array = np.frombuffer(buffer, dtype=wire).reshape(shape)
    array.flags.writeable = False
    return array
