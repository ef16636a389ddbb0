"""Receive messages on one endpoint and send each back, stamped, on another.

Usage: echo_stage.py INPUT_ENDPOINT OUTPUT_ENDPOINT

Binds a PULL socket on INPUT_ENDPOINT and connects a PUSH socket to
OUTPUT_ENDPOINT. Every message comes back with `timestamps["echo.received"]`
set. An EndOfStream ends the process with status 0; no message for 30 s ends it
with status 1.
"""

import sys

from common.schema import EndOfStream, stamp
from common.transport import Receiver, Sender

input_endpoint, output_endpoint = sys.argv[1], sys.argv[2]

with Receiver(input_endpoint, bind=True, hwm=4, stage="echo") as receiver, \
        Sender(output_endpoint, bind=False, hwm=4, stage="echo") as sender:
    while True:
        message = receiver.recv(timeout_ms=30_000)
        if message is None:
            print("no message within 30 s", file=sys.stderr)
            sys.exit(1)
        if isinstance(message, EndOfStream):
            sys.exit(0)
        if not sender.send(stamp(message, "echo.received"), timeout_ms=30_000):
            print("could not send the echo within 30 s", file=sys.stderr)
            sys.exit(1)
