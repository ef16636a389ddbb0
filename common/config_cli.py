"""The `emotion-pipeline check-config` subcommand: validate a config file and print the result."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common.config import ConfigError, load_config

EXIT_INVALID_CONFIG = 2


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate the pipeline config and print it with every default filled in",
        description=(
            "Load the pipeline config, apply the --set overrides, validate it and print the resolved "
            "config. Starts nothing. Exits with status 2 and lists the problems on stderr when the "
            "config is invalid."
        ),
    )
    add_config_arguments(parser)
    parser.add_argument("--format", choices=("toml", "json"), default="toml",
                        help="output format of the resolved config (default: toml)")
    parser.set_defaults(handler=run_check_config, stage="check-config")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config and --set, which every command that reads the pipeline config accepts."""
    parser.add_argument("--config", type=Path, default=None,
                        help="pipeline config file (TOML); without it every value takes its default")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, for example classifier.max_batch=64 "
                             "(VALUE is read as TOML, else as a string); repeatable")


def run_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID_CONFIG
    data = config.model_dump(mode="json")
    print(json.dumps(data, indent=2) if args.format == "json" else to_toml(data), end="\n")
    missing = missing_source_path(config.capture.source)
    if missing is not None:
        # The config may be meant for another machine, so this is a warning and the config stays valid.
        print(f"Warning: capture.source {missing} does not exist on this machine, so `run` with this config "
              "would fail here. Check the path, or ignore this if the config is for another machine.",
              file=sys.stderr)
    return 0


def missing_source_path(source: str | None) -> Path | None:
    """Return the source as a path when it names a local file or folder that does not exist, else None."""
    if source is None or "://" in source or source.isdigit() or source.startswith("/dev/video"):
        return None
    path = Path(source).expanduser()
    return None if path.exists() else path


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    """Format a config dump (tables of scalars) as TOML, leaving out None values, which means unset."""
    lines = []
    for section, values in data.items():
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        # A JSON string with ASCII escapes is also a valid TOML basic string.
        return json.dumps(value, ensure_ascii=True)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a TOML value")
