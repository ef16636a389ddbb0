"""The detector stage: find faces in each frame, send the frame to the sink and the crops to the workers.

Sockets:
- frames in: PULL, bound; capture pushes `Frame` and `EndOfStream` messages.
- work: ROUTER, bound; classifier workers connect DEALERs and pull `FaceCrops`
  by credit (see common.work and detector.dispatch).
- results: PUSH, connected to the sink; carries `DetectedFrame` and the
  forwarded `EndOfStream`.

While no worker has credit, crops wait in the dispatcher's backlog. Once the
backlog reaches `max_backlog` frames the stage stops reading frames, so the
frames queue up in capture: a file source then waits, a live source drops.
"""

import logging
import time

import numpy as np
import zmq

from common.metrics import FACES, FACES_REJECTED, FRAMES, MESSAGES_REJECTED, QUEUE_DEPTH, STAGE_LATENCY
from common.schema import DetectedFrame, EndOfStream, FaceCrops, Frame, MessageError, empty_boxes, encode, stamp
from common.transport import decode_counted, make_socket, recv_parts, send_parts
from common.work import Heartbeat, WorkerDone, WorkerReady, decode_control
from detector.dispatch import WorkDispatcher, worker_name
from detector.quality import QualityConfig, screen_faces

logger = logging.getLogger(__name__)

STAGE = "detector"
SEND_TIMEOUT_MS = 1000
CLOSE_LINGER_MS = 2000


class DetectorStage:
    """Stage logic of the detector; drive it with common.stage.StageRunner."""

    def __init__(
        self,
        frames_endpoint: str,
        work_endpoint: str,
        results_endpoint: str,
        *,
        backend: str,
        quality: QualityConfig,
        input_hwm: int = 4,
        max_backlog: int = 16,
        worker_timeout_s: float = 3.0,
        stop_event=None,
    ):
        self.frames_endpoint = frames_endpoint
        self.work_endpoint = work_endpoint
        self.results_endpoint = results_endpoint
        self.backend = backend
        self.quality = quality
        self.input_hwm = input_hwm
        self.max_backlog = max_backlog
        self.dispatcher: WorkDispatcher[tuple[str, int], FaceCrops] = WorkDispatcher(worker_timeout_s)
        self.stop_event = stop_event
        self.detector = None
        self.context: zmq.Context | None = None
        self.frames_socket: zmq.Socket | None = None
        self.work_socket: zmq.Socket | None = None
        self.results_socket: zmq.Socket | None = None

    def setup(self) -> None:
        from detector.detectors import create_detector

        self.detector = create_detector(self.backend)
        self.context = zmq.Context()
        self.frames_socket = make_socket(self.context, zmq.PULL, self.frames_endpoint, bind=True, hwm=self.input_hwm)
        self.work_socket = make_socket(self.context, zmq.ROUTER, self.work_endpoint, bind=True, hwm=1000)
        # Report a send to a worker that is gone instead of dropping it silently.
        self.work_socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.results_socket = make_socket(self.context, zmq.PUSH, self.results_endpoint, bind=False, hwm=64)
        logger.info(
            "Detector (%s) reading frames on %s, serving workers on %s, sending to %s",
            self.backend, self.frames_endpoint, self.work_endpoint, self.results_endpoint,
        )

    def step(self, timeout_s: float) -> bool:
        # Read frames only while the backlog has room, so a slow classifier slows capture down.
        reading = len(self.dispatcher.backlog) < self.max_backlog
        poller = zmq.Poller()
        poller.register(self.work_socket, zmq.POLLIN)
        if reading:
            poller.register(self.frames_socket, zmq.POLLIN)
        events = dict(poller.poll(int(timeout_s * 1000)))

        if self.work_socket in events:
            self.receive_control()
        if reading and self.frames_socket in events:
            parts = recv_parts(self.frames_socket, 0)
            if parts is not None:
                self.receive_frame(parts)

        self.dispatcher.expire(time.monotonic())
        self.dispatch()
        QUEUE_DEPTH.labels(stage=STAGE).set(len(self.dispatcher.backlog))
        return True

    def receive_frame(self, parts: list) -> None:
        message = decode_counted(parts, STAGE, self.frames_endpoint)
        if isinstance(message, EndOfStream):
            logger.info("Source %s ended after %d frames (%s)", message.source_id, message.frame_index, message.reason)
            self.send_to_sink(message)
        elif isinstance(message, Frame):
            self.process_frame(message)
        elif message is not None:
            logger.warning("Dropped a %s message on %s: the detector expects frames", message.kind, self.frames_endpoint)

    def process_frame(self, frame: Frame) -> None:
        received = time.time()
        boxes = self.detector.detect(frame.pixels)
        screened = screen_faces(frame.pixels, boxes, self.backend, self.quality)

        accepted = to_box_array([face.box for face in screened.accepted])
        rejected = to_box_array([face.box for face in screened.rejected])
        reasons = [str(face.reason) for face in screened.rejected]
        for reason in reasons:
            FACES_REJECTED.labels(stage=STAGE, source=frame.source_id, reason=reason).inc()

        timestamps = {**frame.timestamps, "detector.received": received, "detector.sent": time.time()}
        detected = DetectedFrame(
            source_id=frame.source_id, frame_index=frame.frame_index, capture_time=frame.capture_time,
            timestamps=timestamps, pixels=frame.pixels, fps=frame.fps,
            boxes=accepted, rejected_boxes=rejected, rejected_reasons=reasons,
        )
        self.send_to_sink(detected)

        if len(accepted):
            crops = np.stack([face.crop for face in screened.accepted])
            work = FaceCrops(
                source_id=frame.source_id, frame_index=frame.frame_index, capture_time=frame.capture_time,
                timestamps=timestamps, boxes=accepted, crops=crops,
            )
            self.dispatcher.submit((frame.source_id, frame.frame_index), work)

        STAGE_LATENCY.labels(stage=STAGE, source=frame.source_id).observe(time.time() - received)
        FRAMES.labels(stage=STAGE, source=frame.source_id).inc()
        FACES.labels(stage=STAGE, source=frame.source_id).inc(len(accepted))

    def receive_control(self) -> None:
        while True:
            try:
                parts = self.work_socket.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            worker_id, payload = parts[0], parts[1:]
            try:
                message = decode_control(payload)
            except MessageError as error:
                MESSAGES_REJECTED.labels(stage=STAGE, reason=error.reason).inc()
                logger.warning("Rejected a control message from worker %s: %s", worker_name(worker_id), error)
                continue

            now = time.monotonic()
            if isinstance(message, WorkerReady):
                self.dispatcher.worker_ready(worker_id, message.credits, now)
            elif isinstance(message, WorkerDone):
                self.dispatcher.acknowledge(worker_id, message.frames, now)
            elif isinstance(message, Heartbeat) and not self.dispatcher.heartbeat(worker_id, now):
                # A worker that joined before this detector (re)started.
                self.dispatcher.worker_ready(worker_id, message.credits, now)

    def dispatch(self) -> None:
        for worker_id, key, work in self.dispatcher.assign():
            try:
                self.work_socket.send_multipart([worker_id, *encode(stamp(work, "detector.dispatched"))],
                                                flags=zmq.NOBLOCK, copy=False)
            except zmq.ZMQError as error:
                # EHOSTUNREACH: the worker disconnected. EAGAIN: its queue is full.
                # Either way the frame goes back to the backlog with the worker's other frames.
                self.dispatcher.remove_worker(worker_id, f"send failed: {error.strerror}")

    def send_to_sink(self, message) -> None:
        while not send_parts(self.results_socket, encode(message), timeout_ms=SEND_TIMEOUT_MS):
            if self.stop_event is not None and self.stop_event.is_set():
                logger.warning("Stopping with frame %s/%d unsent: the sink did not accept it",
                               message.source_id, message.frame_index)
                return
            logger.warning("Sink at %s has not accepted frames for %d ms; retrying",
                           self.results_endpoint, SEND_TIMEOUT_MS)

    def close(self) -> None:
        pending = len(self.dispatcher.backlog) + self.dispatcher.in_flight
        for socket in (self.frames_socket, self.work_socket):
            if socket is not None:
                socket.close(linger=0)
        if self.results_socket is not None:
            # Give the sink a moment to take the last frames and the end of stream.
            self.results_socket.close(linger=CLOSE_LINGER_MS)
        if self.context is not None:
            self.context.term()
        logger.info("Detector closed with %d frames waiting for classification", pending)


def to_box_array(boxes: list) -> np.ndarray:
    if not boxes:
        return empty_boxes()
    return np.array([[box.x, box.y, box.w, box.h] for box in boxes], dtype=np.int32)
