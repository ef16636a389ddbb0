"""The classifier worker stage: batch face crops from many frames and run the CNN once per batch.

A worker connects a DEALER socket to the detector's work endpoint and requests
work by credit (see common.work). It batches the crops it receives by size and
deadline (classifier.batching), sends one `Classifications` message per frame
to the sink, then acknowledges those frames to the detector so they count as
done. Several workers can share one detector, on one machine or many.
"""

import logging
import os
import time
import uuid

import zmq

from classifier.batching import Batch, FaceBatcher
from classifier.labels import EMOTIONS
from common.config import DEFAULT_ZOOM_VIEWS
from common.metrics import BATCH_SIZE, FACES, FRAMES, QUEUE_DEPTH, STAGE_LATENCY
from common.schema import Classifications, FaceCrops, encode, stamp
from common.transport import decode_counted, make_socket, recv_parts, send_parts
from common.work import Heartbeat, WorkerDone, WorkerReady, encode_control

logger = logging.getLogger(__name__)

STAGE = "classifier"
HEARTBEAT_INTERVAL_S = 1.0
SEND_TIMEOUT_MS = 1000
CLOSE_LINGER_MS = 2000


class ClassifierWorker:
    """Stage logic of one classifier worker; drive it with common.stage.StageRunner."""

    def __init__(
        self,
        work_endpoint: str,
        results_endpoint: str,
        *,
        max_batch: int,
        max_delay_ms: float,
        model_path=None,
        backend: str = "keras",
        flip_average: bool = True,
        zoom_views: tuple[float, ...] = DEFAULT_ZOOM_VIEWS,
        worker_id: str | None = None,
        stop_event=None,
        slow_down_ms: float = 0.0,
    ):
        self.work_endpoint = work_endpoint
        self.results_endpoint = results_endpoint
        self.model_path = model_path
        self.backend = backend
        self.flip_average = flip_average
        self.zoom_views = zoom_views
        self.worker_id = worker_id or f"{os.uname().nodename}-{os.getpid()}"
        # The ZeroMQ identity, which the detector logs: the worker id plus a random suffix set in setup().
        self.identity = self.worker_id
        self.batcher: FaceBatcher[FaceCrops] = FaceBatcher(max_batch, max_delay_ms / 1000.0)
        # Enough frames to fill one batch while the previous one runs.
        self.credits = 2 * max_batch
        self.frames_in_progress = 0
        self.context: zmq.Context | None = None
        self.work_socket: zmq.Socket | None = None
        self.results_socket: zmq.Socket | None = None
        self.classifier = None
        self.next_heartbeat = 0.0
        self.stop_event = stop_event  # a threading.Event that ends a wait for the sink
        # A test and benchmark aid: extra time spent per classified face, to overload the pipeline on purpose.
        if slow_down_ms < 0:
            raise ValueError(f"slow_down_ms must be at least 0 milliseconds, got {slow_down_ms}")
        self.slow_down_s = slow_down_ms / 1000.0

    def setup(self) -> None:
        from classifier.inference import EmotionClassifier  # loads TensorFlow or LiteRT

        self.classifier = EmotionClassifier(
            self.model_path, self.backend, flip_average=self.flip_average, zoom_views=self.zoom_views
        )
        self.context = zmq.Context()
        # A random suffix, so a restarted worker is never taken for the one that died.
        self.identity = f"{self.worker_id}-{uuid.uuid4().hex[:8]}"
        self.work_socket = make_socket(self.context, zmq.DEALER, self.work_endpoint, bind=False, hwm=self.credits,
                                       identity=self.identity.encode())
        self.results_socket = make_socket(self.context, zmq.PUSH, self.results_endpoint, bind=False, hwm=64)

        send_parts(self.work_socket, encode_control(WorkerReady(self.credits)))
        self.next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL_S
        logger.info(
            "Classifier worker %s asking %s for work (max batch %d faces, max delay %.1f ms)",
            self.identity, self.work_endpoint, self.batcher.max_batch, self.batcher.max_delay_s * 1000,
        )
        if self.slow_down_s:
            logger.warning("Classifier worker %s slowed down on purpose by %.1f ms per face",
                           self.identity, self.slow_down_s * 1000)

    def step(self, timeout_s: float) -> bool:
        now = time.monotonic()
        wait_s = self.batcher.seconds_until_due(now)
        wait_s = timeout_s if wait_s is None else min(timeout_s, wait_s)

        parts = recv_parts(self.work_socket, int(wait_s * 1000))
        while parts is not None:
            self.receive(parts)
            parts = recv_parts(self.work_socket, 0)

        batch = self.batcher.take(time.monotonic())
        if batch is not None:
            self.classify(batch)

        QUEUE_DEPTH.labels(stage=STAGE).set(self.batcher.pending_faces)
        if time.monotonic() >= self.next_heartbeat:
            send_parts(self.work_socket, encode_control(Heartbeat(self.credits - self.frames_in_progress)), block=False)
            self.next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL_S
        return True

    def receive(self, parts: list) -> None:
        message = decode_counted(parts, STAGE, self.work_endpoint)
        if message is None:
            return
        if not isinstance(message, FaceCrops):
            logger.warning(
                "Dropped a %s message from %s: a worker expects face_crops", message.kind, self.work_endpoint
            )
            return
        self.frames_in_progress += 1
        self.batcher.add(stamp(message, "classifier.received"), time.monotonic())

    def classify(self, batch: Batch[FaceCrops]) -> None:
        started = time.monotonic()
        probabilities = self.classifier.predict(batch.crops)
        if self.slow_down_s:
            self.wait_slow_down(len(batch.crops))
        BATCH_SIZE.labels(stage=STAGE).observe(len(batch.crops))

        done = []
        for item, rows in zip(batch.items, batch.split(probabilities)):
            result = Classifications(
                source_id=item.source_id,
                frame_index=item.frame_index,
                capture_time=item.capture_time,
                timestamps={**item.timestamps, "classifier.sent": time.time()},
                boxes=item.boxes,
                probabilities=rows,
                labels=list(EMOTIONS),
                worker_id=self.worker_id,
            )
            self.send_result(result)
            done.append((item.source_id, item.frame_index))
            latency = time.time() - item.timestamps.get("classifier.received", time.time())
            STAGE_LATENCY.labels(stage=STAGE, source=item.source_id).observe(latency)
            FRAMES.labels(stage=STAGE, source=item.source_id).inc()
            FACES.labels(stage=STAGE, source=item.source_id).inc(len(item.crops))

        self.frames_in_progress -= len(done)
        send_parts(self.work_socket, encode_control(WorkerDone(done)))
        logger.debug("Classified %d faces of %d frames in %.1f ms",
                     len(batch.crops), len(done), (time.monotonic() - started) * 1000)

    def wait_slow_down(self, faces: int) -> None:
        """Wait the deliberate slow-down for `faces` faces, ending early when a stop is requested."""
        delay_s = self.slow_down_s * faces
        if self.stop_event is not None:
            self.stop_event.wait(delay_s)
        else:
            time.sleep(delay_s)

    def send_result(self, result: Classifications) -> None:
        # The sink is the end of the pipeline: wait for it rather than drop, but not forever.
        while not send_parts(self.results_socket, encode(result), timeout_ms=SEND_TIMEOUT_MS):
            if self.stop_event is not None and self.stop_event.is_set():
                logger.warning("Stopping with frame %s/%d unsent: the sink did not accept it",
                               result.source_id, result.frame_index)
                return
            logger.warning(
                "Sink at %s has not accepted results for %d ms; retrying frame %s/%d",
                self.results_endpoint, SEND_TIMEOUT_MS, result.source_id, result.frame_index,
            )

    def close(self) -> None:
        if self.work_socket is not None:
            self.work_socket.close(linger=0)
        if self.results_socket is not None:
            # Give the sink a moment to take the last results.
            self.results_socket.close(linger=CLOSE_LINGER_MS)
        if self.context is not None:
            self.context.term()
        logger.info("Classifier worker %s closed with %d frames unclassified", self.identity, self.frames_in_progress)

