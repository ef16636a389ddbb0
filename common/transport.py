"""ZeroMQ sockets for the pipeline's channels, with one set of conventions.

Every socket has an explicit send and receive high-water mark of at least 1, so
no queue grows without bound. Linger is 0, so closing never waits for unsent
parts. Each inbound part is capped at `schema.MAX_ARRAY_BYTES` (ZMQ_MAXMSGSIZE),
and libzmq disconnects a peer that sends a larger one. Every receive takes a timeout.

`Sender` and `Receiver` wrap one PUSH or PULL socket each. For other patterns,
such as the detector's ROUTER and the workers' DEALER sockets, use `make_socket`,
`send_parts`, `recv_parts` and `decode_counted`, which apply the same rules.
"""

import logging
import socket
import os
import re
import time
from pathlib import Path

import zmq

from common.logs import RateLimitedLog
from common.metrics import MESSAGES_REJECTED
from common.schema import MAX_ARRAY_BYTES, Message, MessageError, decode, encode

logger = logging.getLogger(__name__)

ENDPOINT_FORMS = "ipc://PATH, tcp://HOST:PORT, or tcp://*:PORT and tcp://HOST:* to bind"

# A Unix socket path fits in sockaddr_un.sun_path: 108 bytes on Linux, one of them the final NUL.
MAX_IPC_PATH_BYTES = 107

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_IPV6 = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")

# One rate limit per stage for rejected messages, shared by all its sockets.
_reject_logs: dict[str, RateLimitedLog] = {}


class EndpointError(ValueError):
    """An endpoint string that is not one of the accepted forms."""


class TransportError(RuntimeError):
    """A socket that could not bind or connect."""


def validate_endpoint(endpoint: str, *, bind: bool | None = None) -> str:
    """Return `endpoint` unchanged if it is a valid ZeroMQ endpoint, else raise EndpointError.

    Wildcards (`tcp://*:PORT`, `tcp://HOST:*`) are accepted only when `bind` is
    not False, because a connecting socket needs a concrete address.
    """
    if not isinstance(endpoint, str):
        raise EndpointError(f"endpoint must be a string, got {type(endpoint).__name__} {endpoint!r}. "
                            f"Expected {ENDPOINT_FORMS}")
    if endpoint.startswith("ipc://"):
        _check_ipc_path(endpoint, endpoint[len("ipc://"):])
    elif endpoint.startswith("tcp://"):
        _check_tcp_address(endpoint, endpoint[len("tcp://"):], bind)
    else:
        raise EndpointError(f"invalid endpoint {endpoint!r}: unsupported transport. Expected {ENDPOINT_FORMS}")
    return endpoint


def _check_ipc_path(endpoint: str, path: str) -> None:
    if not path or path in ("*", "@"):
        raise EndpointError(f"invalid endpoint {endpoint!r}: missing the socket path. Expected {ENDPOINT_FORMS}")
    size = len(os.fsencode(path))
    if size > MAX_IPC_PATH_BYTES:
        raise EndpointError(f"invalid endpoint {endpoint!r}: the ipc path is {size} bytes, and Linux allows "
                            f"at most {MAX_IPC_PATH_BYTES}. Use a shorter run folder, for example under /tmp")


def _check_tcp_address(endpoint: str, address: str, bind: bool | None) -> None:
    host, separator, port = address.rpartition(":")
    if not separator or not host:
        raise EndpointError(f"invalid endpoint {endpoint!r}: missing host or port. Expected {ENDPOINT_FORMS}")
    wildcard = host == "*" or port == "*"
    if wildcard and bind is False:
        raise EndpointError(f"invalid endpoint {endpoint!r}: a connecting socket needs a concrete host and "
                            f"port, not '*'")
    if host != "*" and not (_HOSTNAME.match(host) or _IPV6.match(host)):
        raise EndpointError(f"invalid endpoint {endpoint!r}: {host!r} is not a host name or IP address. "
                            f"Expected {ENDPOINT_FORMS}")
    if port != "*" and not (port.isdigit() and port.isascii() and 1 <= int(port) <= 65535):
        raise EndpointError(f"invalid endpoint {endpoint!r}: port {port!r} is not a number from 1 to 65535. "
                            f"Expected {ENDPOINT_FORMS}")


def default_endpoint(run_dir: Path, name: str) -> str:
    """Return `ipc://RUN_DIR/NAME.ipc` with RUN_DIR made absolute, checking the ipc path length."""
    if not name or "/" in name:
        raise EndpointError(f"invalid channel name {name!r}: expected a non-empty name without '/'")
    return validate_endpoint(f"ipc://{Path(run_dir).absolute() / f'{name}.ipc'}")


def make_socket(context: zmq.Context, socket_type: int, endpoint: str, *, bind: bool, hwm: int,
                identity: bytes | None = None) -> zmq.Socket:
    """Create a socket with the pipeline's options, then bind or connect it to `endpoint`.

    `identity` names the socket to a ROUTER peer; ZeroMQ applies it only when
    it is set before the connection, so it is set here.

    Raises EndpointError for an invalid endpoint and TransportError when binding or
    connecting fails; the socket is closed in both cases.
    """
    validate_endpoint(endpoint, bind=bind)
    if isinstance(hwm, bool) or not isinstance(hwm, int) or hwm < 1:
        raise ValueError(f"hwm must be a whole number of messages of at least 1, got {hwm!r}")

    socket = context.socket(socket_type)
    try:
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, hwm)
        socket.setsockopt(zmq.RCVHWM, hwm)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_ARRAY_BYTES)
        if identity is not None:
            socket.setsockopt(zmq.IDENTITY, identity)
        if bind:
            socket.bind(endpoint)
        else:
            socket.connect(endpoint)
    except zmq.ZMQError as error:
        socket.close(linger=0)
        action = "bind" if bind else "connect"
        hint = " Check that no other process uses it and that the folder exists." if bind else ""
        raise TransportError(f"failed to {action} {_socket_type_name(socket_type)} socket to {endpoint}: "
                             f"{error.strerror}.{hint}") from error
    except BaseException:
        socket.close(linger=0)
        raise
    logger.debug("%s %s socket to %s (hwm %d)", "Bound" if bind else "Connected",
                 _socket_type_name(socket_type), endpoint, hwm)
    return socket


def send_parts(socket: zmq.Socket, parts: list, *, block: bool = True, timeout_ms: int | None = None) -> bool:
    """Send `parts` as one message without copying large buffers; return False if it would block.

    With `block=False` the send gives up at once when the high-water mark is
    reached. With `block=True` it waits up to `timeout_ms`, or without limit when
    `timeout_ms` is None. A caller that must react to a stop request passes a timeout.
    """
    if block and timeout_ms is not None:
        if not socket.poll(max(timeout_ms, 0), zmq.POLLOUT):
            return False
        block = False
    flags = 0 if block else zmq.NOBLOCK
    try:
        socket.send_multipart(parts, flags=flags, copy=False)
    except zmq.Again:
        # A multipart message is atomic: when the first part would block, nothing was queued.
        return False
    return True


def recv_parts(socket: zmq.Socket, timeout_ms: int) -> list[zmq.Frame] | None:
    """Receive one message as a list of zmq.Frame parts, or return None after `timeout_ms`."""
    if not socket.poll(max(timeout_ms, 0), zmq.POLLIN):
        return None
    try:
        return socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return None


def decode_counted(parts: list, stage: str, origin: str = "") -> Message | None:
    """Decode `parts`; on a MessageError count it, log it with a rate limit and return None.

    The count goes to `emotion_messages_rejected_total{stage, reason}`. `origin`
    names where the parts came from (an endpoint or a worker id) in the log line.
    """
    try:
        return decode(parts)
    except MessageError as error:
        MESSAGES_REJECTED.labels(stage=stage, reason=error.reason).inc()
        log = _reject_logs.setdefault(stage, RateLimitedLog(logger))
        log.warning("Rejected a message from %s in stage %s: %s", origin or "a peer", stage, error)
        return None


class _Channel:
    def __init__(self, endpoint: str, *, bind: bool, socket_type: int, hwm: int, stage: str,
                 context: zmq.Context | None):
        self.stage = stage
        self.requested_endpoint = endpoint
        self._socket = make_socket(context or zmq.Context.instance(), socket_type, endpoint, bind=bind, hwm=hwm)

    @property
    def socket(self) -> zmq.Socket:
        """The underlying socket, for a zmq.Poller; send and receive through this object."""
        return self._socket

    @property
    def endpoint(self) -> str:
        """The bound or connected endpoint, with a wildcard port replaced by the one chosen."""
        last = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        return last or self.requested_endpoint

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; safe to call more than once.

        With the default `linger_ms` of 0, unsent parts are discarded. A sender
        whose last messages must arrive (an end of stream) passes a linger in
        milliseconds, and the context's `term()` then waits up to that long.
        """
        self._socket.close(linger=linger_ms)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Sender(_Channel):
    """One sending socket (PUSH by default) that encodes messages."""

    def __init__(self, endpoint: str, *, bind: bool, socket_type: int = zmq.PUSH, hwm: int, stage: str,
                 context: zmq.Context | None = None):
        super().__init__(endpoint, bind=bind, socket_type=socket_type, hwm=hwm, stage=stage, context=context)

    def send(self, message: Message, *, block: bool = True, timeout_ms: int | None = None) -> bool:
        """Encode and send `message`; return False when it would block or timed out (nothing sent).

        Arrays go out without a copy: do not change them after sending.
        """
        return send_parts(self._socket, encode(message), block=block, timeout_ms=timeout_ms)


class Receiver(_Channel):
    """One receiving socket (PULL by default) that decodes messages and skips invalid ones."""

    def __init__(self, endpoint: str, *, bind: bool, socket_type: int = zmq.PULL, hwm: int, stage: str,
                 context: zmq.Context | None = None):
        super().__init__(endpoint, bind=bind, socket_type=socket_type, hwm=hwm, stage=stage, context=context)

    def recv(self, timeout_ms: int) -> Message | None:
        """Return the next valid message, or None when none arrived within `timeout_ms`.

        Invalid messages are counted, logged with a rate limit and skipped, and the
        wait goes on until the same deadline.
        """
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000
        while True:
            remaining_ms = max(0, round((deadline - time.monotonic()) * 1000))
            parts = recv_parts(self._socket, remaining_ms)
            if parts is None:
                return None
            message = decode_counted(parts, self.stage, self.requested_endpoint)
            if message is not None:
                return message
            if time.monotonic() >= deadline:
                return None


def _socket_type_name(socket_type: int) -> str:
    try:
        return zmq.SocketType(socket_type).name
    except ValueError:
        return str(socket_type)


def free_tcp_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return `count` distinct TCP ports that were free on `host` a moment ago.

    NOTE: another process may take a port between this call and its use, so
    callers that bind must still handle "address in use".
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
