"""The pipeline config: one TOML file for every stage, read and validated by `load_config`.

Every section rejects unknown keys, and every field has a default, a unit in its
description and bounds, so an empty file is a valid configuration. Overrides
such as `classifier.max_batch=64` (from `--set`) are applied before validation.
Any failure raises ConfigError naming the key path, the value and what is allowed.
"""

import difflib
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.logs import LOG_LEVELS
from common.transport import validate_endpoint

_SOURCE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"

Port = Annotated[int, Field(ge=0, le=65535)]
Hwm = Annotated[int, Field(ge=1, le=10_000)]


# Zoom factors of the classifier's extra views of each face; docs/model.md measures each choice.
DEFAULT_ZOOM_VIEWS = (1.1,)


class Section(BaseModel):
    # strict: a TOML string "32" is not silently taken for the number 32.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)


class CaptureConfig(Section):
    source: str | None = Field(
        None, min_length=1,
        description="video file, image, folder of images, rtsp:// or http(s):// URL, webcam index or "
                    "/dev/videoN, or unset for the built-in demo clip")
    source_id: str = Field(
        "source0", min_length=1, max_length=64, pattern=_SOURCE_ID_PATTERN,
        description="name of the source in messages, logs and metric labels (letters, digits, _ . : -)")
    realtime: bool = Field(
        False, description="pace file sources at their frame rate instead of as fast as downstream accepts")
    # This queue plus the detector's (detector.input_hwm) bound how far a live frame can fall
    # behind: 4 + 4 frames, plus what a tcp:// endpoint's kernel buffers hold. A longer queue
    # would only add latency, because a live source drops instead of waiting anyway.
    output_hwm: Hwm = Field(
        4, description="frames queued toward the detector before a live source drops (messages)")

    # Live sources only (streams and webcams).
    open_timeout_s: float = Field(
        10.0, ge=0.1, le=600, description="maximum wait for a stream to open, including each reopen (seconds)")
    read_timeout_s: float = Field(
        10.0, ge=0.1, le=600, description="maximum time one read of a stream may block (seconds)")
    stall_timeout_s: float = Field(
        5.0, ge=0.1, le=600,
        description="a live source that delivers no frame for this long is treated as lost and reopened; "
                    "a stream's read timeout is cut to this when it is longer (seconds)")
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp", description="RTSP transport, unless OPENCV_FFMPEG_CAPTURE_OPTIONS sets one: tcp or udp")
    reconnect_delay_s: float = Field(
        1.0, ge=0.1, le=600, description="wait before the first reopen of a lost live source, doubled after "
                                        "each failed attempt (seconds)")
    reconnect_max_delay_s: float = Field(
        30.0, ge=0.1, le=3600, description="maximum wait between reopen attempts (seconds)")
    reconnect_attempts: int | None = Field(
        None, ge=0, le=1_000_000,
        description="failed reopen attempts in a row before a live source ends, 0 to end it at the first "
                    "loss, or unset to retry without limit (attempts)")

    @model_validator(mode="after")
    def _check_reconnect_delays(self) -> "CaptureConfig":
        if self.reconnect_max_delay_s < self.reconnect_delay_s:
            raise ValueError(f"capture.reconnect_max_delay_s = {self.reconnect_max_delay_s} is below "
                             f"capture.reconnect_delay_s = {self.reconnect_delay_s}; raise the maximum or "
                             f"lower the first delay")
        return self


class DetectorConfig(Section):
    # blazeface_full found the face in all 115 frames of a real phone clip with no false
    # positives, and faces down to about 7% of the frame width (docs/detectors.md).
    backend: Literal["haar", "blazeface", "blazeface_full"] = Field(
        "blazeface_full", description="face detector: haar, blazeface (short range) or blazeface_full")
    min_face_size: int = Field(
        40, ge=1, le=4096,
        description="faces smaller than this are rejected as too_small, measured as the side of the "
                    "equivalent Haar box (pixels)")
    # A PULL queue of 1 or 2 messages sometimes lost the last messages when its sender
    # disconnected (pyzmq 27, seen in loop tests); 4 never did.
    input_hwm: int = Field(4, ge=4, le=10_000, description="frames queued from capture (messages)")
    # Every frame in this backlog adds one classification to a live frame's latency once the
    # workers fall behind. Workers also hold their own credit of frames, so 16 keeps them fed.
    max_backlog: int = Field(
        16, ge=1, le=10_000,
        description="frames of face crops waiting for a classifier worker before the detector stops "
                    "reading frames (frames)")


class ClassifierConfig(Section):
    max_batch: int = Field(32, ge=1, le=1024, description="maximum faces in one CNN batch (faces)")
    max_delay_ms: float = Field(
        10.0, ge=0, le=1000,
        description="maximum wait after the oldest face arrived before a partial batch runs (milliseconds)")
    workers: int = Field(1, ge=1, le=16, description="classifier worker processes (processes)")
    model: Path | None = Field(
        None, strict=False, description="trained model file (.keras or .tflite), or unset for the shipped model")
    # litert loads no TensorFlow and ran batches of 1 to 32 faces about 4x faster than keras
    # (an estimate from one run on a loaded 2-core machine, not yet a repository benchmark).
    backend: Literal["keras", "litert"] = Field("litert", description="inference backend for the model")
    flip_average: bool = Field(
        True,
        description="also classify each face mirrored left to right and average the results "
                    "(more accurate, twice the model work per face)")
    zoom_views: list[Annotated[float, Field(gt=1, le=2)]] = Field(
        list(DEFAULT_ZOOM_VIEWS), max_length=4,
        description="zoom factors of extra views of each face, its centre enlarged, whose results are "
                    "averaged in (each adds one more model input per face, two with flip_average); "
                    "[] for none")


class SinkConfig(Section):
    record: Path | None = Field(
        None, strict=False, description="annotated video to write (.mp4), or unset for no recording")
    events: Path | None = Field(
        None, strict=False, description="JSON lines file to write with one event per face per frame, or unset for none")
    display: bool = Field(False, description="show the annotated video in a window (needs a display)")
    classification_timeout_ms: int = Field(
        2000, ge=1, le=60_000,
        description="maximum wait for a frame's classifications before it is released unclassified "
                    "(milliseconds)")
    max_pending_frames: int = Field(
        256, ge=1, le=10_000, description="frames held while waiting for classifications (frames)")


class EndpointsConfig(Section):
    """ZeroMQ endpoints. They must be concrete addresses, because both sides of a channel use them."""

    frames: str = Field(
        "tcp://127.0.0.1:7701", description="capture to detector, PUSH to PULL, bound by the detector")
    crops: str = Field(
        "tcp://127.0.0.1:7702", description="detector to classifier workers, ROUTER and DEALER, bound by the detector")
    results: str = Field(
        "tcp://127.0.0.1:7703", description="detector and workers to sink, PUSH to PULL, bound by the sink")

    @field_validator("frames", "crops", "results")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        return validate_endpoint(value, bind=False)

    @model_validator(mode="after")
    def _check_distinct(self) -> "EndpointsConfig":
        seen: dict[str, str] = {}
        for name in ("frames", "crops", "results"):
            endpoint = getattr(self, name)
            if endpoint in seen:
                raise ValueError(f"endpoints.{name} and endpoints.{seen[endpoint]} are both {endpoint}, "
                                 f"every channel needs its own endpoint")
            seen[endpoint] = name
        return self


class MetricsConfig(Section):
    host: str = Field(
        "127.0.0.1", min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:-]+$",
        description="address the metrics servers listen on (0.0.0.0 exposes them to the network)")
    capture: Port = Field(9201, description="capture's metrics port (TCP port, 0 disables)")
    detector: Port = Field(9202, description="detector's metrics port (TCP port, 0 disables)")
    sink: Port = Field(9203, description="sink's metrics port (TCP port, 0 disables)")
    # Last, with room above it for the 16 workers classifier.workers allows.
    classifier: Port = Field(
        9210, description="first classifier worker's metrics port, worker i uses this plus i (TCP port, 0 disables)")

    def port_for(self, stage: str, worker: int = 0) -> int | None:
        """Return the metrics port of `stage` (and classifier `worker`), or None when disabled."""
        if stage not in ("capture", "detector", "classifier", "sink"):
            raise ValueError(f"unknown stage {stage!r}, expected capture, detector, classifier or sink")
        port = getattr(self, stage)
        if port == 0:
            return None
        return port + worker if stage == "classifier" else port


class LoggingConfig(Section):
    level: Literal[LOG_LEVELS] = Field("INFO", description="lowest severity of log lines written to stderr")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class PipelineConfig(Section):
    capture: CaptureConfig = Field(default_factory=CaptureConfig, description="video source")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="face detection")
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig, description="emotion classifier workers")
    sink: SinkConfig = Field(default_factory=SinkConfig, description="annotated output")
    endpoints: EndpointsConfig = Field(default_factory=EndpointsConfig, description="ZeroMQ endpoints")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics servers")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="log output")

    @model_validator(mode="after")
    def _check_metrics_ports(self) -> "PipelineConfig":
        metrics = self.metrics
        ports = {"metrics.capture": metrics.capture, "metrics.detector": metrics.detector,
                 "metrics.sink": metrics.sink}
        if metrics.classifier:
            last = metrics.classifier + self.classifier.workers - 1
            if last > 65535:
                raise ValueError(f"metrics.classifier = {metrics.classifier} with classifier.workers = "
                                 f"{self.classifier.workers} needs ports up to {last}, above 65535")
            for worker in range(self.classifier.workers):
                ports[f"metrics.classifier (worker {worker})"] = metrics.classifier + worker
        owners: dict[int, str] = {}
        for key, port in ports.items():
            if port == 0:
                continue
            if port in owners:
                raise ValueError(f"{key} and {owners[port]} both use port {port}, every process needs its own")
            owners[port] = key
        return self


class ConfigError(ValueError):
    """An unreadable or invalid configuration. The message lists each problem on its own line."""


def load_config(path: Path | None = None, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Read the TOML file at `path` (None: defaults only), apply `KEY=VALUE` overrides and validate."""
    data = _read_toml(path) if path is not None else {}
    for override in overrides:
        _apply_override(data, override)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        where = f" in {path}" if path is not None else ""
        lines = [f"invalid configuration{where}:"]
        lines += [f"  {_describe_error(item)}" for item in error.errors()]
        raise ConfigError("\n".join(lines)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found. Pass an existing TOML file, or no --config "
                          f"for the defaults") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, separator, text = override.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not separator or not all(part.strip() for part in parts) or len(parts) < 2:
        raise ConfigError(f"invalid override {override!r}: expected SECTION.KEY=VALUE, "
                          f"for example classifier.max_batch=64")
    value = _parse_value(text.strip())

    table = data
    for depth, part in enumerate(parts[:-1]):
        child = table.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"invalid override {override!r}: {prefix} is a value, not a section")
        table = child
    table[parts[-1]] = value


def _parse_value(text: str) -> Any:
    """Parse `text` as a TOML value (64, true, "a b", [1, 2]), or keep it as a plain string."""
    try:
        parsed = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    # A text with a newline could define more keys than the one value.
    return parsed["value"] if set(parsed) == {"value"} else text


def _describe_error(item: dict[str, Any]) -> str:
    loc = tuple(item["loc"])
    path = ".".join(str(part) for part in loc) or "(top level)"
    kind = item["type"]
    value = item.get("input")

    if kind == "extra_forbidden":
        return _describe_unknown_key(loc)
    if kind in ("model_type", "model_attributes_type", "dict_type") and _field_at(loc) is not None:
        return f"{path} must be a table ([{path}] section), got {value!r}"
    message = item["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if kind == "value_error" and (not loc or _section_model_at(loc) is not None):
        # A model validator's own message already names the keys involved.
        return message
    bounds = _describe_bounds(loc)
    suffix = f" (allowed: {bounds})" if bounds else ""
    return f"{path} = {value!r} is invalid: {message}{suffix}"


def _describe_unknown_key(loc: tuple) -> str:
    *parents, key = (str(part) for part in loc)
    dotted = ".".join([*parents, key])
    model = PipelineConfig
    for parent in parents:
        model = _section_model(model, parent)
        if model is None:
            return f"unknown key {dotted}"
    allowed = list(model.model_fields)
    where = f"[{'.'.join(parents)}]" if parents else "the top level"
    what = "key" if parents else "section"
    text = f"unknown {what} {dotted}. Allowed in {where}: {', '.join(allowed)}"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        text += f". Did you mean {close[0]}?"
    return text


def _section_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    info = model.model_fields.get(name)
    annotation = info.annotation if info is not None else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _section_model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = PipelineConfig
    for part in loc:
        if model is None or not isinstance(part, str):
            return None
        model = _section_model(model, part)
    return model


def _field_at(loc: tuple):
    model: type[BaseModel] | None = PipelineConfig
    info = None
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = _section_model(model, part)
    return info


def _describe_bounds(loc: tuple) -> str:
    """Describe the bounds of the numeric field at `loc`, for example "integer from 1 to 1024"."""
    info = _field_at(loc)
    if info is None:
        return ""
    low = high = None
    for constraint in info.metadata:
        # pydantic stores ge= and le= as annotated_types.Ge and Le objects.
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", high)
    kind = "integer" if info.annotation is int else "number"
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if low is not None:
        return f"{kind} of at least {low}"
    if high is not None:
        return f"{kind} of at most {high}"
    return ""
