import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from common.config import ConfigError, PipelineConfig, load_config
from common.config_cli import to_toml

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "deploy" / "pipeline.example.toml"
# The console script installed beside this Python by `pip install -e .`.
COMMAND = [str(Path(sys.executable).parent / "emotion-pipeline")]


def config_error(overrides=(), text: str | None = None, tmp_path: Path | None = None) -> str:
    path = None
    if text is not None:
        path = tmp_path / "pipeline.toml"
        path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return str(caught.value)


def check_config(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, "check-config", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT)


def test_defaults_without_file():
    config = load_config(None)

    assert config.classifier.max_batch == 32
    assert config.classifier.max_delay_ms == 10.0
    assert config.classifier.workers == 1
    assert config.classifier.flip_average is True
    assert config.classifier.zoom_views == [1.1]
    assert config.capture.source is None
    assert config.sink.record is None
    assert config.metrics.host == "127.0.0.1"
    assert config.endpoints.frames.startswith("tcp://127.0.0.1:")
    assert config.logging.level == "INFO"


def test_every_field_has_description_and_default():
    sections = PipelineConfig.model_fields
    for section_name, section in sections.items():
        model = section.annotation
        for name, info in model.model_fields.items():
            assert info.description, f"{section_name}.{name}"
            assert not info.is_required(), f"{section_name}.{name}"


def test_example_file_is_valid():
    config = load_config(EXAMPLE)

    assert config.capture.source == "street.mp4"
    assert config.sink.record == Path("annotated.mp4")


def test_file_values_and_overrides(tmp_path):
    path = tmp_path / "pipeline.toml"
    path.write_text('[classifier]\nmax_batch = 16\nworkers = 2\n\n[sink]\nrecord = "out.mp4"\n')

    config = load_config(path, ["classifier.max_batch=64", "sink.display=true", "capture.source=clips/a b.mp4",
                                'capture.source_id="cam-1"', "classifier.max_delay_ms=2.5"])

    assert config.classifier.max_batch == 64
    assert config.classifier.workers == 2
    assert config.sink.record == Path("out.mp4")
    assert config.sink.display is True
    assert config.capture.source == "clips/a b.mp4"
    assert config.capture.source_id == "cam-1"
    assert config.classifier.max_delay_ms == 2.5


def test_override_with_newline_stays_one_value():
    message = config_error(["capture.source_id=a\nclassifier.max_batch = 1"])

    assert "capture.source_id" in message


def test_metrics_port_for_stage():
    metrics = load_config(None, ["metrics.classifier=9300", "metrics.sink=0"]).metrics

    assert metrics.port_for("classifier", worker=2) == 9302
    assert metrics.port_for("detector") == 9202
    assert metrics.port_for("sink") is None
    with pytest.raises(ValueError, match="unknown stage"):
        metrics.port_for("supervisor")


def test_unknown_section_named_with_suggestion(tmp_path):
    message = config_error(text="[clasifier]\nmax_batch = 3\n", tmp_path=tmp_path)

    assert "unknown section clasifier" in message
    assert "Did you mean classifier?" in message
    assert str(tmp_path / "pipeline.toml") in message


def test_unknown_nested_key_lists_allowed_keys():
    message = config_error(["classifier.max_bacth=3"])

    assert "unknown key classifier.max_bacth" in message
    assert "max_batch, max_delay_ms, workers" in message
    assert "Did you mean max_batch?" in message


def test_unknown_top_level_value(tmp_path):
    message = config_error(text="debug = true\n", tmp_path=tmp_path)

    assert "unknown section debug" in message


@pytest.mark.parametrize("override, words", [
    ("classifier.max_batch=0", ["classifier.max_batch = 0", "integer from 1 to 1024"]),
    ("classifier.max_batch=1025", ["classifier.max_batch = 1025", "integer from 1 to 1024"]),
    ("classifier.workers=17", ["classifier.workers = 17", "integer from 1 to 16"]),
    ("classifier.max_delay_ms=-1", ["classifier.max_delay_ms = -1", "number from 0 to 1000"]),
    ("metrics.sink=70000", ["metrics.sink = 70000", "integer from 0 to 65535"]),
    ("detector.min_face_size=0", ["detector.min_face_size = 0", "integer from 1 to 4096"]),
    ("sink.classification_timeout_ms=0", ["sink.classification_timeout_ms = 0", "integer from 1 to 60000"]),
    ("classifier.zoom_views=[1.1, 0.9]", ["classifier.zoom_views.1 = 0.9", "greater than 1"]),
    ("classifier.zoom_views=[1.1, 1.2, 1.3, 1.4, 1.5]", ["classifier.zoom_views", "at most 4 items"]),
])
def test_out_of_range_value_named(override, words):
    message = config_error([override])

    for word in words:
        assert word in message


@pytest.mark.parametrize("override, words", [
    ('classifier.max_batch="32"', ["classifier.max_batch = '32'", "valid integer"]),
    ("classifier.max_batch=many", ["classifier.max_batch = 'many'", "valid integer"]),
    ("classifier.max_batch=[1, 2]", ["classifier.max_batch = [1, 2]", "valid integer"]),
    ("sink.display=yes", ["sink.display = 'yes'", "valid boolean"]),
    ("capture.realtime=1", ["capture.realtime = 1", "valid boolean"]),
    ("classifier.backend=onnx", ["classifier.backend = 'onnx'", "'keras' or 'litert'"]),
    ("logging.level=verbose", ["logging.level", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"]),
    ("capture.source_id=two words", ["capture.source_id = 'two words'", "pattern"]),
    ("metrics.host=bad host", ["metrics.host = 'bad host'", "pattern"]),
])
def test_wrong_type_named(override, words):
    message = config_error([override])

    for word in words:
        assert word in message


def test_section_that_is_not_a_table(tmp_path):
    message = config_error(text="classifier = 5\n", tmp_path=tmp_path)

    assert "classifier must be a table ([classifier] section), got 5" in message


def test_every_error_listed(tmp_path):
    message = config_error(text="[classifier]\nmax_batch = 0\nworkers = 0\n", tmp_path=tmp_path)

    assert "classifier.max_batch = 0" in message
    assert "classifier.workers = 0" in message


@pytest.mark.parametrize("endpoint, words", [
    ("udp://127.0.0.1:7701", ["endpoints.frames", "'udp://127.0.0.1:7701'", "ipc://PATH"]),
    ("tcp://*:7701", ["endpoints.frames", "'tcp://*:7701'", "concrete host"]),
    ("tcp://127.0.0.1:99999", ["endpoints.frames", "port '99999'"]),
    ("ipc://" + "/x" * 60, ["endpoints.frames", "at most 107"]),
])
def test_bad_endpoint_named(endpoint, words):
    message = config_error([f'endpoints.frames="{endpoint}"'])

    for word in words:
        assert word in message


def test_endpoints_must_differ():
    message = config_error(['endpoints.results="tcp://127.0.0.1:7701"'])

    assert "endpoints.results and endpoints.frames are both tcp://127.0.0.1:7701" in message


def test_metrics_ports_must_differ():
    message = config_error(["metrics.sink=9202"])

    assert "metrics.sink and metrics.detector both use port 9202" in message


def test_classifier_worker_ports_must_not_collide():
    message = config_error(["classifier.workers=4", "metrics.classifier=9200", "metrics.capture=0",
                            "metrics.detector=0"])

    assert "metrics.classifier (worker 3) and metrics.sink both use port 9203" in message


def test_disabled_metrics_ports_may_repeat():
    config = load_config(None, ["metrics.capture=0", "metrics.detector=0"])

    assert config.metrics.port_for("capture") is None


@pytest.mark.parametrize("override", ["classifier.max_batch", "=3", "max_batch=3", "classifier..x=1", ".x=1"])
def test_bad_override_syntax(override):
    message = config_error([override])

    assert f"invalid override {override!r}" in message
    assert "SECTION.KEY=VALUE" in message


def test_override_below_a_value():
    message = config_error(["classifier.max_batch=3", "classifier.max_batch.low=1"])

    assert "classifier.max_batch is a value, not a section" in message


def test_missing_file_named(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")

    assert f"config file {tmp_path / 'absent.toml'} not found" in str(caught.value)


def test_invalid_toml_names_file_and_line(tmp_path):
    message = config_error(text="[classifier]\nmax_batch = = 3\n", tmp_path=tmp_path)

    assert "is not valid TOML" in message
    assert "line 2" in message


def test_to_toml_round_trip():
    config = load_config(None, ["capture.source=rtsp://camera.local/stream?a=\"1\"", "sink.record=out.mp4"])

    text = to_toml(config.model_dump(mode="json"))

    assert PipelineConfig.model_validate(tomllib.loads(text)) == config


def test_check_config_prints_resolved_config():
    result = check_config("--config", str(EXAMPLE), "--set", "classifier.max_batch=64")

    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed["classifier"]["max_batch"] == 64
    assert printed["capture"]["source"] == "street.mp4"
    assert printed["metrics"]["sink"] == 9203


@pytest.mark.parametrize(("source", "warned"), [
    ("no-such-clip.mp4", True),
    ("pyproject.toml", False),
    ("rtsp://127.0.0.1:8554/cam", False),
    ("0", False),
])
def test_check_config_warns_missing_source(source, warned):
    result = check_config("--set", f"capture.source='{source}'")

    assert result.returncode == 0, result.stderr
    assert ("does not exist on this machine" in result.stderr) is warned


def test_check_config_json_output():
    result = check_config("--format", "json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["classifier"]["max_batch"] == 32


def test_check_config_invalid_exits_2():
    result = check_config("--set", "classifier.max_batch=0", "--set", "classifier.max_bacth=1")

    assert result.returncode == 2
    assert "classifier.max_batch = 0" in result.stderr
    assert "unknown key classifier.max_bacth" in result.stderr
    assert result.stdout == ""
