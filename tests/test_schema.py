import dataclasses
import math

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.schema import (
    MAX_ARRAY_BYTES,
    MAX_FACES,
    MAX_HEADER_BYTES,
    MESSAGE_TYPES,
    REJECT_REASONS,
    SCHEMA_VERSION,
    Classifications,
    DetectedFrame,
    EndOfStream,
    FaceCrops,
    Frame,
    MessageError,
    decode,
    empty_boxes,
    encode,
    stamp,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
TIMESTAMPS = {"capture.sent": 1_700_000_000.25, "detector.received": 1_700_000_000.5}


def random_array(shape, dtype, seed: int = 0) -> np.ndarray:
    generator = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is None:
        return generator.random(shape, dtype=np.float32)
    return generator.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def boxes(count: int) -> np.ndarray:
    return random_array((count, 4), np.int32, seed=count)


def probabilities(count: int) -> np.ndarray:
    values = random_array((count, len(LABELS)), np.float32, seed=count)
    return values / values.sum(axis=1, keepdims=True)


def sample_messages() -> dict[str, object]:
    """One message of each kind, and frames of each pixel layout, keyed by a readable id."""
    return {
        "frame_gray_u8": Frame("cam0", 0, 1_700_000_000.0, dict(TIMESTAMPS),
                               random_array((5, 7), np.uint8), fps=25.0),
        "frame_bgr_u8": Frame("cam0", 1, 1_700_000_000.04, {}, random_array((36, 64, 3), np.uint8, 1)),
        "frame_bgra_u16": Frame("cam0", 2, 1.5, {}, random_array((9, 11, 4), np.uint16, 2), fps=29.97),
        "frame_one_channel_u16": Frame("cam0", 3, 2.0, {}, random_array((4, 3, 1), np.uint16, 3)),
        "detected_frame": DetectedFrame("cam0", 4, 3.0, dict(TIMESTAMPS), random_array((20, 30, 3), np.uint8, 4),
                                        25.0, boxes(3), boxes(2), ["too_small", "blurred"]),
        "detected_frame_no_faces": DetectedFrame("cam0", 5, 3.0, {}, random_array((8, 8), np.uint8, 5),
                                                 None, empty_boxes()),
        "face_crops": FaceCrops("cam0", 6, 4.0, dict(TIMESTAMPS), boxes(2), random_array((2, 48, 48), np.uint8, 6)),
        "classifications": Classifications("cam0", 7, 5.0, dict(TIMESTAMPS), boxes(2), probabilities(2),
                                           list(LABELS), "worker-1"),
        "end_of_stream": EndOfStream("cam0", 115, 6.0, {"capture.sent": 6.5}, "end of file"),
    }


SAMPLES = sample_messages()


def wire(parts) -> list[bytes]:
    """Copy encoded parts into bytes, as they would arrive from a socket."""
    return [bytes(memoryview(part).cast("B")) if memoryview(part).nbytes else b"" for part in parts]


def assert_same_message(received, sent) -> None:
    assert type(received) is type(sent)
    for item in dataclasses.fields(sent):
        expected = getattr(sent, item.name)
        actual = getattr(received, item.name)
        if isinstance(expected, np.ndarray):
            assert actual.dtype == expected.dtype, item.name
            assert actual.shape == expected.shape, item.name
            assert actual.tobytes() == expected.tobytes(), item.name
        else:
            assert actual == expected, item.name


def header_of(message) -> dict:
    return msgpack.unpackb(encode(message)[0], raw=False)


def with_header(message, header: dict) -> list[bytes]:
    return [msgpack.packb(header, use_bin_type=True), *wire(encode(message))[1:]]


def reason_of(parts) -> str:
    with pytest.raises(MessageError) as caught:
        decode(parts)
    return caught.value.reason


@pytest.mark.parametrize("name", SAMPLES)
def test_round_trip_keeps_every_field(name):
    message = SAMPLES[name]

    received = decode(wire(encode(message)))

    assert_same_message(received, message)


def test_round_trip_of_non_contiguous_pixels():
    full = random_array((10, 12, 3), np.uint8)
    view = full[::2, ::3]
    message = Frame("cam0", 0, 1.0, {}, view)

    received = decode(wire(encode(message)))

    assert received.pixels.shape == (5, 4, 3)
    assert np.array_equal(received.pixels, view)


def test_encode_sends_contiguous_arrays_without_copy():
    pixels = random_array((32, 32, 3), np.uint8)

    parts = encode(Frame("cam0", 0, 1.0, {}, pixels))

    assert len(parts) == 2
    assert np.shares_memory(parts[1], pixels)


def test_decoded_arrays_are_read_only():
    received = decode(wire(encode(SAMPLES["frame_bgr_u8"])))

    assert not received.pixels.flags.writeable


def test_header_names_kind_version_and_arrays():
    header = header_of(SAMPLES["detected_frame"])

    assert header["kind"] == "detected_frame"
    assert header["version"] == SCHEMA_VERSION
    assert header["timestamps"] == TIMESTAMPS
    assert header["arrays"] == [["pixels", "uint8", [20, 30, 3]], ["boxes", "int32", [3, 4]],
                                ["rejected_boxes", "int32", [2, 4]]]


def test_stamp_returns_copy_with_timestamp():
    message = SAMPLES["frame_gray_u8"]

    stamped = stamp(message, "detector.sent", 1_700_000_001.0)

    assert stamped.timestamps == {**TIMESTAMPS, "detector.sent": 1_700_000_001.0}
    assert message.timestamps == TIMESTAMPS
    assert stamped.pixels is message.pixels


def test_stamp_defaults_to_now():
    stamped = stamp(SAMPLES["end_of_stream"], "sink.received")

    assert stamped.timestamps["sink.received"] > 1_600_000_000


@pytest.mark.parametrize("build, reason, words", [
    (lambda: Frame("cam0", 0, 1.0, {}, np.zeros((4, 4), np.float32)), "invalid_field", "dtype"),
    (lambda: Frame("cam0", 0, 1.0, {}, np.zeros((4, 4, 2), np.uint8)), "invalid_field", "channels"),
    (lambda: Frame("cam0", 0, 1.0, {}, np.zeros((0, 4), np.uint8)), "invalid_field", "px"),
    (lambda: Frame("cam0", 0, 1.0, {}, np.zeros(4, np.uint8)), "invalid_field", "dimensions"),
    (lambda: Frame("", 0, 1.0, {}, np.zeros((4, 4), np.uint8)), "invalid_field", "source_id"),
    (lambda: Frame("cam0", -1, 1.0, {}, np.zeros((4, 4), np.uint8)), "invalid_field", "frame_index"),
    (lambda: Frame("cam0", True, 1.0, {}, np.zeros((4, 4), np.uint8)), "invalid_field", "frame_index"),
    (lambda: Frame("cam0", 0, float("nan"), {}, np.zeros((4, 4), np.uint8)), "invalid_field", "capture_time"),
    (lambda: Frame("cam0", 0, 1.0, {"a": "b"}, np.zeros((4, 4), np.uint8)), "invalid_field", "timestamps"),
    (lambda: Frame("cam0", 0, 1.0, {}, np.zeros((4, 4), np.uint8), fps=0), "invalid_field", "fps"),
    (lambda: Frame("x" * 300, 0, 1.0, {}, np.zeros((4, 4), np.uint8)), "oversized", "source_id"),
    (lambda: Frame("cam0", 0, 1.0, {}, np.zeros((4, 4), ">u2")), "invalid_field", "dtype"),
    (lambda: DetectedFrame("cam0", 0, 1.0, {}, np.zeros((4, 4), np.uint8), None, boxes(2), boxes(1), []),
     "invalid_field", "rejected_reasons"),
    (lambda: DetectedFrame("cam0", 0, 1.0, {}, np.zeros((4, 4), np.uint8), None, np.zeros((2, 4), np.int64)),
     "invalid_field", "dtype"),
    (lambda: DetectedFrame("cam0", 0, 1.0, {}, np.zeros((4, 4), np.uint8), None, np.zeros((2, 5), np.int32)),
     "invalid_field", "(N, 4)"),
    (lambda: DetectedFrame("cam0", 0, 1.0, {}, np.zeros((4, 4), np.uint8), None, boxes(MAX_FACES + 1)),
     "oversized", "boxes"),
    (lambda: FaceCrops("cam0", 0, 1.0, {}, boxes(3), np.zeros((2, 48, 48), np.uint8)), "invalid_field", "crops"),
    (lambda: FaceCrops("cam0", 0, 1.0, {}, boxes(1), np.zeros((1, 48, 40), np.uint8)), "invalid_field", "square"),
    (lambda: Classifications("cam0", 0, 1.0, {}, boxes(2), probabilities(2), LABELS[:6], "w"),
     "invalid_field", "labels"),
    (lambda: Classifications("cam0", 0, 1.0, {}, boxes(1), np.full((1, 7), np.nan, np.float32), LABELS, "w"),
     "invalid_field", "probabilities"),
    (lambda: Classifications("cam0", 0, 1.0, {}, boxes(1), probabilities(1), LABELS, ""), "invalid_field",
     "worker_id"),
    (lambda: EndOfStream("cam0", 0, 1.0, {}, 5), "invalid_field", "reason"),
])
def test_constructor_rejects_invalid_field(build, reason, words):
    with pytest.raises(MessageError) as caught:
        build()

    assert caught.value.reason == reason
    assert words in caught.value.detail


def test_message_error_rejects_unknown_reason():
    with pytest.raises(ValueError, match="unknown reject reason"):
        MessageError("bad", "detail")


# Decoding of invalid parts: each case and its documented reason.


def test_decode_empty_part_list_is_truncated():
    assert reason_of([]) == "truncated"


def test_decode_non_list_is_malformed():
    assert reason_of(b"\x80") == "malformed"


def test_decode_non_buffer_part_is_malformed():
    assert reason_of([encode(SAMPLES["end_of_stream"])[0], 17]) == "malformed"


def test_decode_oversized_header():
    assert reason_of([b"\x00" * (MAX_HEADER_BYTES + 1)]) == "oversized"


def test_decode_header_not_a_map_is_malformed():
    assert reason_of([msgpack.packb([1, 2, 3])]) == "malformed"


def test_decode_ext_type_is_malformed():
    header = header_of(SAMPLES["end_of_stream"])
    header["reason"] = msgpack.ExtType(5, b"code")

    assert reason_of([msgpack.packb(header)]) == "malformed"


def test_decode_binary_header_value_is_malformed():
    """Headers hold no msgpack bin values: bytes travel only as array parts."""
    header = header_of(SAMPLES["end_of_stream"])
    header["reason"] = b"end of file"

    assert reason_of([msgpack.packb(header, use_bin_type=True)]) == "malformed"


def test_decode_missing_array_part_is_truncated():
    parts = wire(encode(SAMPLES["detected_frame"]))

    assert reason_of(parts[:-1]) == "truncated"


def test_decode_extra_part_is_malformed():
    parts = wire(encode(SAMPLES["end_of_stream"]))

    assert reason_of([*parts, b"extra"]) == "malformed"


def test_decode_missing_field_is_invalid():
    header = header_of(SAMPLES["end_of_stream"])
    del header["reason"]

    assert reason_of(with_header(SAMPLES["end_of_stream"], header)) == "invalid_field"


def test_decode_unknown_field_is_invalid():
    header = header_of(SAMPLES["end_of_stream"])
    header["priority"] = 1

    assert reason_of(with_header(SAMPLES["end_of_stream"], header)) == "invalid_field"


def test_decode_dtype_outside_whitelist_is_invalid():
    message = SAMPLES["frame_gray_u8"]
    header = header_of(message)
    header["arrays"][0][1] = "float64"

    assert reason_of(with_header(message, header)) == "invalid_field"


def test_decode_dtype_of_wrong_field_is_invalid():
    """float32 is on the wire whitelist, but pixels must be uint8 or uint16."""
    message = Frame("cam0", 0, 1.0, {}, np.zeros((2, 2), np.uint16))
    header = header_of(message)
    header["arrays"][0][1:] = ["float32", [2, 1]]  # the same 8 bytes

    assert reason_of(with_header(message, header)) == "invalid_field"


def test_decode_crop_count_mismatch_is_invalid():
    message = SAMPLES["face_crops"]
    header = header_of(message)
    header["arrays"][1][2] = [1, 48, 48]
    parts = with_header(message, header)
    parts[2] = parts[2][: 48 * 48]

    assert reason_of(parts) == "invalid_field"


# Fuzzing: any input gives a message or a MessageError with a documented reason.

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)

# The Python types each header field accepts; a value of any other type must be rejected.
ACCEPTED_TYPES = {
    "kind": (str,), "version": (int,), "source_id": (str,), "frame_index": (int,),
    "capture_time": (int, float), "timestamps": (dict,), "fps": (type(None), int, float),
    "rejected_reasons": (list,), "labels": (list,), "worker_id": (str,), "reason": (str,), "arrays": (list,),
}


def decode_or_reason(parts):
    """Return the decoded message, or the reason of the MessageError; any other exception fails the test."""
    try:
        return decode(parts)
    except MessageError as error:
        assert error.reason in REJECT_REASONS
        return error.reason


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_rejected(data):
    with pytest.raises(MessageError) as caught:
        decode([data])

    assert caught.value.reason in REJECT_REASONS


@FUZZ
@given(st.lists(st.binary(max_size=256), max_size=6))
def test_fuzz_random_part_lists_rejected(parts):
    with pytest.raises(MessageError) as caught:
        decode(parts)

    assert caught.value.reason in REJECT_REASONS


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_fuzz_truncated_array_part(name, data):
    parts = wire(encode(SAMPLES[name]))
    array_indexes = [index for index in range(1, len(parts)) if parts[index]]
    if not array_indexes:
        return
    index = data.draw(st.sampled_from(array_indexes))
    cut = data.draw(st.integers(1, len(parts[index])))
    parts[index] = parts[index][:-cut]

    assert reason_of(parts) == "truncated"


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_fuzz_extended_array_part(name, data):
    parts = wire(encode(SAMPLES[name]))
    if len(parts) == 1:
        return
    index = data.draw(st.integers(1, len(parts) - 1))
    parts[index] += data.draw(st.binary(min_size=1, max_size=64))

    assert reason_of(parts) == "malformed"


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_fuzz_dropped_or_added_part(name, data):
    parts = wire(encode(SAMPLES[name]))
    if data.draw(st.booleans(), label="drop") and len(parts) > 1:
        del parts[data.draw(st.integers(1, len(parts) - 1))]
        expected = "truncated"
    else:
        parts.insert(data.draw(st.integers(1, len(parts))), data.draw(st.binary(max_size=16)))
        # An inserted part shifts the arrays: a later part may then be too long or too short.
        expected = {"malformed", "truncated"}

    reason = reason_of(parts)

    assert reason in expected if isinstance(expected, set) else reason == expected


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_fuzz_corrupted_header_bytes(name, data):
    parts = wire(encode(SAMPLES[name]))
    header = bytearray(parts[0])
    for _ in range(data.draw(st.integers(1, 4))):
        header[data.draw(st.integers(0, len(header) - 1))] = data.draw(st.integers(0, 255))
    parts[0] = bytes(header)

    result = decode_or_reason(parts)

    # Flipping a byte inside a float or a string can leave a valid message.
    assert isinstance(result, str) or type(result) in MESSAGE_TYPES.values()


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_fuzz_header_field_of_wrong_type(name, data):
    message = SAMPLES[name]
    header = header_of(message)
    key = data.draw(st.sampled_from(sorted(header)))
    header[key] = data.draw(msgpack_values.filter(lambda value: not isinstance(value, ACCEPTED_TYPES[key])
                                                  or (isinstance(value, bool) and bool not in ACCEPTED_TYPES[key])))

    assert reason_of(with_header(message, header)) == "invalid_field"


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_fuzz_header_field_of_wrong_value(name, data):
    """Values of the right type but not allowed: malformed or invalid, never accepted."""
    message = SAMPLES[name]
    header = header_of(message)
    key = data.draw(st.sampled_from([key for key in ("source_id", "frame_index", "capture_time", "timestamps",
                                                     "arrays", "rejected_reasons", "labels") if key in header]))
    bad_values = {
        "source_id": st.just(""),
        "frame_index": st.integers(-(2**63), -1) | st.integers(min_value=2**63, max_value=2**64 - 1),
        "capture_time": st.sampled_from([float("nan"), float("inf"), -1.0]),
        "timestamps": st.dictionaries(st.text(max_size=8), st.text(max_size=4) | st.none(), min_size=1,
                                      max_size=3),
        "arrays": st.lists(st.lists(msgpack_values, max_size=3), max_size=3),
        "rejected_reasons": st.lists(st.text(min_size=1, max_size=8), min_size=3, max_size=5),
        # msgpack packs integers from -2**63 to 2**64 - 1 only.
        "labels": st.lists(st.integers(-(2**63), 2**64 - 1), min_size=1, max_size=3),
    }
    original = header[key]
    header[key] = data.draw(bad_values[key].filter(lambda value: value != original))

    assert reason_of(with_header(message, header)) in {"invalid_field", "malformed", "truncated"}


@FUZZ
@given(st.sampled_from([name for name, message in SAMPLES.items() if message.array_fields]), st.data())
def test_fuzz_huge_declared_shape(name, data):
    message = SAMPLES[name]
    header = header_of(message)
    entry = data.draw(st.sampled_from(header["arrays"]))
    itemsize = np.dtype(entry[1]).itemsize
    entry[2] = data.draw(st.lists(st.integers(1, 2**40), min_size=1, max_size=3).filter(
        lambda dims: math.prod(dims) * itemsize > MAX_ARRAY_BYTES))

    assert reason_of(with_header(message, header)) == "oversized"


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.integers(-(2**63), 2**64 - 1).filter(lambda v: v != SCHEMA_VERSION))
def test_fuzz_wrong_version(name, version):
    message = SAMPLES[name]
    header = header_of(message)
    header["version"] = version

    assert reason_of(with_header(message, header)) == "wrong_version"


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.text(max_size=60).filter(lambda kind: kind not in MESSAGE_TYPES))
def test_fuzz_unknown_kind(name, kind):
    message = SAMPLES[name]
    header = header_of(message)
    header["kind"] = kind

    assert reason_of(with_header(message, header)) == "unknown_kind"


@FUZZ
@given(st.data())
def test_fuzz_round_trip_of_random_frames(data):
    dtype = data.draw(st.sampled_from([np.uint8, np.uint16]))
    shape = data.draw(st.sampled_from([(), (1,), (3,), (4,)]).map(
        lambda channels: (data.draw(st.integers(1, 16)), data.draw(st.integers(1, 16)), *channels)))
    pixels = random_array(shape, dtype, seed=data.draw(st.integers(0, 2**32 - 1)))
    timestamps = data.draw(st.dictionaries(st.text(min_size=1, max_size=20),
                                           st.floats(allow_nan=False, allow_infinity=False), max_size=5))
    message = Frame(data.draw(st.text(min_size=1, max_size=20)), data.draw(st.integers(0, 2**63 - 1)),
                    data.draw(st.floats(0, 4e9)), timestamps, pixels)

    assert_same_message(decode(wire(encode(message))), message)
