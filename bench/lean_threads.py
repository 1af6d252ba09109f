"""The lean floor with the bridge's thread layout: a read thread per reader, one I/O thread.

``python -m bench.lean_threads --port P SOCKET...`` does exactly what ``bench.lean`` does
(same codec, same hand-written PUBLISH packets, same window) but splits it the way issue 18
asks the bridge to: a thread per reader reads reports (a poll, then reads until none is left,
as the bridge's read thread does through hidapi), reassembles and encodes them, and hands the
burst to the one I/O thread (a deque and an eventfd wake-up, one per burst), which owns the
broker connections behind one selector. Nothing else: no outbox, no spool, no metrics.

Its CPU over ``bench.lean``'s is what the thread layout itself costs (the hand-over, the
second thread's wake-ups, the GIL passing between them), before any bridge code runs.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import socket
import threading
from collections import deque

from bench.common import publisher_args
from bench.lean import Connection
from bridge.mms import MessageReceived, Reassembler, parse_message
from bridge.mqtt.encoding import encode_publish_properties

BOOT = "0123456789abcdef"


class Handover:
    """Bursts from the read threads to the I/O thread: one eventfd write per burst."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.items: deque[tuple[Connection, bytes]] = deque()
        self.signalled = False

    def put(self, burst: list[tuple[Connection, bytes]]) -> None:
        self.items.extend(burst)
        if not self.signalled:
            self.signalled = True
            os.eventfd_write(self.fd, 1)

    def take(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)
        self.signalled = False
        while self.items:
            connection, body = self.items.popleft()
            connection.publish(body)


def read_reports(path: str, connection: Connection, handover: Handover) -> None:
    feed = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    feed.connect(path)
    feed.setblocking(False)
    poller = select.poll()
    poller.register(feed, select.POLLIN)
    reassembler = Reassembler()
    seq = 0
    while True:
        poller.poll(50)
        burst: list[tuple[Connection, bytes]] = []
        while True:
            try:
                report = feed.recv(64)
            except BlockingIOError:
                break
            if not report:
                os._exit(0)
            for event in reassembler.feed(report):
                if isinstance(event, MessageReceived):
                    data = event.message
                    parse_message(data)
                    seq += 1
                    properties = encode_publish_properties(
                        (("boot_id", BOOT), ("seq", str(seq))), expiry_interval=300)
                    burst.append((connection, properties + data.hex().upper().encode("ascii")))
        if burst:
            handover.put(burst)


def main() -> int:
    args = publisher_args("python -m bench.lean_threads")
    selector = selectors.DefaultSelector()
    handover = Handover()
    selector.register(handover.fd, selectors.EVENT_READ, None)
    connections = []
    for index, path in enumerate(args.sockets):
        serial = path.rsplit("/", 1)[1].removesuffix(".sock")
        connection = Connection(args.port, f"bench-lean-threads-{index}", serial)
        connections.append(connection)
        selector.register(connection.sock, selectors.EVENT_READ, connection)
        threading.Thread(target=read_reports, args=(path, connection, handover),
                         name=f"read-{serial}", daemon=True).start()
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                handover.take()
            else:
                key.data.read()
        for connection in connections:
            connection.flush()


if __name__ == "__main__":
    raise SystemExit(main())
