"""Classification throughput and per-face latency of each inference backend.

Rows, all on the same faces:

- keras `model.predict`, 1 face per call: the way simple demos call the
  model. This is the baseline.
- keras compiled call, 1 face per call: the model called through one traced
  `tf.function`.
- `keras batch N` and `litert batch N`: `EmotionClassifier.predict`, the call the
  classifier workers make, on batches of N faces, preprocessing included.
- `litert, 2 threads, batch N`: the same with a two-thread interpreter, for a
  machine where one classifier process may use every core.
- `litert batch 32, views: ...`: test-time views, each face classified as
  is and mirrored, then also zoomed as the classifier workers do by default
  (`classifier.zoom_views`), so 2 and 4 model inputs per face.

Every other row classifies each face once, to compare the model calls alone.

A face's latency in a batch is the time of the whole batch, because every face
waits for the batch to finish.
"""

import logging
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np

from benchmarks.clips import SHARED_DIR
from benchmarks.report import format_number, markdown_table, ratio
from common.config import DEFAULT_ZOOM_VIEWS

logger = logging.getLogger(__name__)

FER_TEST_DIR = SHARED_DIR / "datasets" / "fer2013" / "test"
BATCH_SIZES = (1, 8, 32, 128)
# (backend, interpreter threads): None is what a classifier worker uses, LiteRT's own choice.
BACKENDS = (("keras", None), ("litert", None), ("litert", 2))
VIEWS_BATCH_SIZE = 32
FACE_SIDE = 48


def load_faces(count: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Return `count` uint8 48x48 faces and where they came from: FER-2013 test crops, else random pixels."""
    paths = sorted(FER_TEST_DIR.glob("*/*.jpg")) if FER_TEST_DIR.is_dir() else []
    rng = np.random.default_rng(seed)
    if len(paths) >= count:
        chosen = rng.choice(len(paths), size=count, replace=False)
        faces = [cv2.imread(str(paths[index]), cv2.IMREAD_GRAYSCALE) for index in chosen]
        if all(face is not None and face.shape == (FACE_SIDE, FACE_SIDE) for face in faces):
            return np.stack(faces), f"{count} FER-2013 test faces from {FER_TEST_DIR}"
        logger.warning("Some FER-2013 images under %s are unreadable or not 48x48; using random faces",
                       FER_TEST_DIR)
    else:
        logger.warning("FER-2013 test faces not found under %s; using random 48x48 faces", FER_TEST_DIR)
    faces = rng.integers(0, 256, (count, FACE_SIDE, FACE_SIDE), dtype=np.uint8)
    return faces, f"{count} random 48x48 faces (FER-2013 not found at {FER_TEST_DIR})"


def time_calls(call: Callable[[np.ndarray], object], batches: list[np.ndarray], repeats: int) -> dict:
    """Time `call` on every batch, `repeats` times over, after one warm-up call per batch size.

    Returns the median over repeats of the throughput in faces/s and the median
    batch time in ms over all calls.
    """
    for size in sorted({len(batch) for batch in batches}):
        call(next(batch for batch in batches if len(batch) == size))
    throughputs, batch_ms = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            call_started = time.perf_counter()
            call(batch)
            batch_ms.append((time.perf_counter() - call_started) * 1000)
        elapsed = time.perf_counter() - started
        throughputs.append(sum(len(batch) for batch in batches) / elapsed)
    return {
        "faces_per_s": statistics.median(throughputs),
        "latency_ms": statistics.median(batch_ms),
        "faces_per_repeat": sum(len(batch) for batch in batches),
        "repeats": repeats,
    }


def split_batches(faces: np.ndarray, size: int) -> list[np.ndarray]:
    return [faces[start:start + size] for start in range(0, len(faces) - size + 1, size)]


def measure_keras_single(classifier, faces: np.ndarray, single_count: int, repeats: int) -> list[dict]:
    """Time `model.predict` and the compiled call on one face at a time."""
    from classifier.preprocess import preprocess_faces

    inputs = preprocess_faces(faces[:single_count])
    singles = [inputs[index:index + 1] for index in range(len(inputs))]
    model = classifier.runner.model
    rows = []
    logger.info("Timing keras model.predict on %d single faces", len(singles))
    predict = time_calls(lambda face: model.predict(face, verbose=0), singles, repeats)
    rows.append({"backend": "keras", "method": "predict", "batch_size": 1} | predict)
    logger.info("Timing the compiled keras call on %d single faces", len(singles))
    compiled = time_calls(classifier.runner, singles, repeats)
    rows.append({"backend": "keras", "method": "compiled", "batch_size": 1} | compiled)
    return rows


def measure_backend(backend: str, threads: int | None, faces: np.ndarray, single_count: int,
                    repeats: int) -> list[dict]:
    from classifier.inference import EmotionClassifier

    classifier = EmotionClassifier(backend=backend, num_threads=threads, flip_average=False, zoom_views=())
    rows = measure_keras_single(classifier, faces, single_count, repeats) if backend == "keras" else []
    for size in BATCH_SIZES:
        batches = split_batches(faces, size)
        logger.info("Timing %s (threads: %s) on %d batches of %d faces", backend, threads or "default",
                    len(batches), size)
        timing = time_calls(classifier.predict, batches, repeats)
        rows.append({"backend": backend, "threads": threads, "method": "classifier", "batch_size": size} | timing)
    return rows


def measure_views(faces: np.ndarray, repeats: int, zoom_views: tuple[float, ...]) -> dict:
    """Time LiteRT on every face mirrored and at each zoom of `zoom_views`, results averaged."""
    from classifier.inference import EmotionClassifier

    classifier = EmotionClassifier(backend="litert", flip_average=True, zoom_views=zoom_views)
    batches = split_batches(faces, VIEWS_BATCH_SIZE)
    logger.info("Timing litert with views (%s) on %d batches of %d faces",
                classifier.describe_views(), len(batches), VIEWS_BATCH_SIZE)
    timing = time_calls(classifier.predict, batches, repeats)
    return {"backend": "litert", "threads": None, "method": "views", "views": classifier.describe_views(),
            "views_per_face": classifier.views_per_face, "batch_size": VIEWS_BATCH_SIZE} | timing


def run_classify(repeats: int, quick: bool) -> dict:
    """Measure every backend and return the rows, the faces used and the speed-up over `model.predict`."""
    face_count = 128 if quick else 1024
    single_count = 8 if quick else 100
    faces, faces_source = load_faces(face_count)
    rows = []
    for backend, threads in BACKENDS:
        rows += measure_backend(backend, threads, faces, single_count, repeats)
    rows.append(measure_views(faces, repeats, zoom_views=()))
    rows.append(measure_views(faces, repeats, zoom_views=DEFAULT_ZOOM_VIEWS))
    baseline = rows[0]["faces_per_s"]
    for row in rows:
        row["speedup_vs_predict"] = row["faces_per_s"] / baseline
    best = max(rows, key=lambda row: row["faces_per_s"])
    return {"faces": faces_source, "rows": rows,
            "best": {key: best[key] for key in ("backend", "batch_size")} | {"threads": best.get("threads")}
            | {"faces_per_s": best["faces_per_s"], "speedup_vs_predict": ratio(best["faces_per_s"], baseline)}}


def describe_row(row: dict) -> str:
    if row["method"] == "predict":
        return "keras `model.predict`, 1 face per call"
    if row["method"] == "compiled":
        return "keras compiled call, 1 face per call"
    if row["method"] == "views":
        return f"{row['backend']} batch {row['batch_size']}, views: {row['views']}"
    if row.get("threads"):
        return f"{row['backend']}, {row['threads']} threads, batch {row['batch_size']}"
    return f"{row['backend']} batch {row['batch_size']}"


def format_classify(result: dict) -> str:
    rows = [
        (describe_row(row), format_number(row["faces_per_s"], 0), format_number(row["latency_ms"], 2),
         f"{row['speedup_vs_predict']:.1f}x")
        for row in result["rows"]
    ]
    table = markdown_table(("method", "faces/s", "batch latency (ms)", "vs model.predict"), rows)
    return f"Faces: {result['faces']}.\n\n{table}"
