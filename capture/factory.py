"""Pick the source kind from the `--source` string."""

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import cv2

from capture.demo import DemoSource
from capture.live import STREAM_SCHEMES, StreamSource, WebcamSource, redact_url
from capture.sources import ImageFileSource, ImageFolderSource, Source, SourceError, VideoFileSource

logger = logging.getLogger(__name__)

DEMO_SPEC = "demo"

# `scheme://...`, but not a Windows drive such as `C:\clips`.
URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


@dataclass(frozen=True)
class StreamOptions:
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    rtsp_transport: str = "tcp"


def create_source(spec: str | None, stream_options: StreamOptions = StreamOptions()) -> Source:
    """Return an unopened source for `spec`.

    `spec` is one of: None or `demo` (the built-in demo), an `rtsp://`, `rtsps://`,
    `http://` or `https://` URL, a webcam index (`0`) or device (`/dev/video0`),
    a `file://` URL or path to a video or image file, or a folder of images.
    Raises SourceError naming `spec` for a missing path, an empty file and an
    unsupported URL scheme. A file that OpenCV's image codecs do not recognise
    is taken as a video, and its `open()` raises SourceError if it does not decode.
    """
    if spec is None or spec == DEMO_SPEC:
        return DemoSource()
    if not spec.strip():
        raise SourceError("Expected a source, got an empty string. Pass a path, URL, webcam index or `demo`.")

    if URL_PATTERN.match(spec):
        scheme = urlsplit(spec).scheme.lower()
        if scheme in STREAM_SCHEMES:
            return StreamSource(spec, open_timeout_s=stream_options.open_timeout_s,
                                read_timeout_s=stream_options.read_timeout_s,
                                rtsp_transport=stream_options.rtsp_transport)
        if scheme == "file":
            return create_file_source(Path(urlsplit(spec).path))
        raise SourceError(
            f"Unsupported URL scheme {scheme!r} in source {redact_url(spec)}. Expected one of "
            f"{', '.join(s + '://' for s in STREAM_SCHEMES)}, file://, a path, a webcam index or `demo`."
        )

    if spec.isdigit() or spec.startswith("/dev/video"):
        return WebcamSource(spec)
    return create_file_source(Path(spec))


def open_source(spec: str | None, stream_options: StreamOptions = StreamOptions()) -> Source:
    """Create and open the source for `spec`. Raises SourceError naming it when either step fails."""
    source = create_source(spec, stream_options)
    source.open()
    return source


def create_file_source(path: Path) -> Source:
    """Return the source for a video file, an image file or a folder of images at `path`."""
    if not path.exists():
        raise SourceError(f"The source path {path} does not exist. Check the path and the current folder "
                          f"({Path.cwd()}).")
    if path.is_dir():
        return ImageFolderSource(path)
    if not path.is_file():
        raise SourceError(f"The source path {path} is neither a regular file nor a folder.")
    if path.stat().st_size == 0:
        raise SourceError(f"The source file {path} is empty (0 bytes). It may still be copying or downloading.")

    # haveImageReader checks the file's signature, not its extension.
    if cv2.haveImageReader(str(path)):
        return ImageFileSource(path)
    return VideoFileSource(path)
