"""The `emotion-pipeline run` subcommand: start the whole pipeline under one supervisor."""

import argparse
import glob
import logging
import shutil
import tempfile
from pathlib import Path

from common.config import ConfigError, PipelineConfig, load_config
from common.config_cli import add_config_arguments, to_toml
from common.supervisor import StageSpec, Supervisor, stage_command

logger = logging.getLogger(__name__)

EXIT_INVALID_ARGUMENTS = 2


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the whole pipeline: capture, detector, classifier workers and sink",
        description=(
            "Start every stage as its own process from one config, wait until each is ready, restart a "
            "stage that crashes, and stop them all on Ctrl-C, on SIGTERM or when a file source has been "
            "processed to its last frame. Without --source it plays a built-in demo clip of a moving "
            "portrait. Options left out take their value from the pipeline config."
        ),
    )
    parser.add_argument("--source", default=None,
                        help="video file, image, folder of images, rtsp:// or http(s):// URL, webcam index "
                             "or /dev/videoN (default: capture.source, else the built-in demo clip)")
    parser.add_argument("--record", type=Path, default=None,
                        help="write the annotated video to this .mp4 file (default: sink.record)")
    parser.add_argument("--events", type=Path, default=None,
                        help="write one JSON line per face per frame to this file (default: sink.events)")
    parser.add_argument("--display", action="store_true", default=None,
                        help="show the annotated video in a window (needs a display)")
    parser.add_argument("--workers", type=int, default=None,
                        help="number of classifier worker processes (default: classifier.workers)")
    parser.add_argument("--realtime", action="store_true", default=None,
                        help="pace file sources at their frame rate (default: capture.realtime)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="folder for the resolved config and the stages' ready files "
                             "(default: a new temporary folder)")
    parser.add_argument("--validate-config", action="store_true",
                        help="load and check the config with these options, print it and exit without "
                             "starting anything")
    add_config_arguments(parser)
    parser.set_defaults(handler=run_pipeline, stage="supervisor")


def run_pipeline(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, [*args.overrides, *option_overrides(args)])
    except ConfigError as error:
        logger.error("%s", error)
        return EXIT_INVALID_ARGUMENTS

    problems = check_output_paths(config)
    if problems:
        for problem in problems:
            logger.error("%s", problem)
        return EXIT_INVALID_ARGUMENTS

    if args.validate_config:
        print(to_toml(config.model_dump(mode="json")))
        return 0

    if args.run_dir is not None and args.run_dir.exists() and not args.run_dir.is_dir():
        logger.error("--run-dir %s is a file. Give a folder, new or existing, for the run's files", args.run_dir)
        return EXIT_INVALID_ARGUMENTS

    temporary_run_dir = args.run_dir is None
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="emotion-pipeline-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "pipeline.toml"
    config_path.write_text(to_toml(config.model_dump(mode="json")) + "\n")
    logger.info("Run folder %s; resolved config in %s", run_dir, config_path)

    supervisor = Supervisor(build_specs(config, config_path, args.log_level), run_dir)
    code = supervisor.run()
    for name, path in (("Annotated video", config.sink.record), ("Events", config.sink.events)):
        if code == 0 and path is not None:
            parts = written_parts(Path(path))
            if len(parts) > 1:
                # A restarted sink continues in a new part file instead of overwriting the first.
                logger.warning("%s written in %d parts after sink restarts: %s", name, len(parts),
                               ", ".join(str(part) for part in parts))
            else:
                logger.info("%s written to %s", name, path)
    if code == 0 and temporary_run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    return code


def check_output_paths(config: PipelineConfig) -> list[str]:
    """Return one message per unusable output file, before any stage starts.

    An output must be a file path in an existing folder, and must not be the
    source or the other output: the sink replaces its outputs when it opens them.
    """
    problems = []
    outputs = [(key, Path(path)) for key, path in (("sink.record", config.sink.record),
                                                    ("sink.events", config.sink.events)) if path is not None]
    source = Path(config.capture.source).resolve() if config.capture.source is not None else None
    for key, path in outputs:
        if path.is_dir() or not path.name:
            problems.append(f"{key}: {path} is a folder. Give a file path such as {path / 'out.mp4'}")
        elif not path.parent.is_dir():
            problems.append(f"{key}: the folder {path.parent} does not exist. Create it or choose "
                            f"another path for {path.name}")
        elif source is not None and path.resolve() == source:
            problems.append(f"{key}: {path} is the source, which the sink would overwrite. Choose another "
                            "output path")
    if len(outputs) == 2 and outputs[0][1].resolve() == outputs[1][1].resolve():
        problems.append(f"sink.record and sink.events are the same file {outputs[0][1]}. Give each its own path")
    return problems


def written_parts(path: Path) -> list[Path]:
    """Return `path` and the part files a restarted sink wrote beside it (`out.part1.mp4`, ...), as they exist."""
    numbered = {}
    for part in path.parent.glob(f"{glob.escape(path.stem)}.part*{glob.escape(path.suffix)}"):
        number = part.name[len(path.stem) + len(".part"):len(part.name) - len(path.suffix)]
        if number.isdigit():
            numbered[int(number)] = part
    return [candidate for candidate in (path, *(numbered[key] for key in sorted(numbered))) if candidate.is_file()]


def option_overrides(args: argparse.Namespace) -> list[str]:
    """Turn the command-line options into config overrides, so every stage reads the same values."""
    overrides = []
    if args.source is not None:
        overrides.append(f"capture.source={quote(args.source)}")
    if args.record is not None:
        overrides.append(f"sink.record={quote(str(args.record.resolve()))}")
    if args.events is not None:
        overrides.append(f"sink.events={quote(str(args.events.resolve()))}")
    if args.display is not None:
        overrides.append(f"sink.display={str(args.display).lower()}")
    if args.workers is not None:
        overrides.append(f"classifier.workers={args.workers}")
    if args.realtime is not None:
        overrides.append(f"capture.realtime={str(args.realtime).lower()}")
    return overrides


def quote(text: str) -> str:
    """Quote a string as a TOML literal so that overrides keep it as a string."""
    if "'" in text or "\n" in text:
        raise ValueError(f"cannot pass {text!r} as an option: it contains a quote or a newline")
    return f"'{text}'"


def build_specs(config: PipelineConfig, config_path: Path, log_level: str) -> list[StageSpec]:
    """List the stage processes in start order: the sink first, capture last."""
    common = ["--config", str(config_path)]

    def command(*arguments: str) -> list[str]:
        return stage_command("--log-level", log_level, *arguments, *common)

    specs = [StageSpec("sink", command("sink"), role="sink")]
    for index in range(config.classifier.workers):
        specs.append(StageSpec(
            f"classifier-{index}", command("classifier", "--worker-index", str(index)), role="classifier",
        ))
    specs.append(StageSpec("detector", command("detector"), role="detector"))
    specs.append(StageSpec("capture", command("capture"), role="capture"))
    return specs
