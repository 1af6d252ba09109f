"""The lean floor: one thread, the project's own codec, PUBLISH packets written by hand.

``python -m bench.lean --port P SOCKET...`` reads the feeder's reports like the bridge
(``recv`` per report, ``Reassembler``, ``parse_message``, upper-case hex), builds each MQTT v5
PUBLISH (QoS 1, ``boot_id``/``seq`` user properties and message expiry from the bridge's own
``encode_publish_properties``) itself, keeps at most 16 in flight per connection like the
bridge's outbox window, and writes everything due in one ``send`` per turn. One broker
connection per reader, one selector for everything. What the bridge would cost with no
framework overhead at all: the floor, not a competitor (no reconnect, no outbox, no spool).
"""

from __future__ import annotations

import selectors
import socket
from collections import deque

from bench.common import publisher_args, topic_for
from bridge.mms import MessageReceived, Reassembler, parse_message
from bridge.mqtt.encoding import encode_publish_properties, encode_string, encode_varint

WINDOW = 16


class Connection:
    def __init__(self, port: int, client_id: str, serial: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = encode_string(b"MQTT") + b"\x05\x02" + (60).to_bytes(2, "big") + b"\x00"
        body += encode_string(client_id.encode())
        self.sock.sendall(b"\x10" + encode_varint(len(body)) + body)
        connack = self.sock.recv(1024)
        if not connack or connack[0] != 0x20:
            raise RuntimeError("no CONNACK")
        self.sock.setblocking(False)
        self.topic = encode_string(topic_for(serial).encode())
        self.mid = 0
        self.in_flight = 0
        self.waiting: deque[bytes] = deque()
        self.out = bytearray()
        self.acked = 0
        self.rest = b""

    def publish(self, packet_body: bytes) -> None:
        if self.in_flight >= WINDOW:
            self.waiting.append(packet_body)
            return
        self._send(packet_body)

    def _send(self, packet_body: bytes) -> None:
        self.mid = self.mid % 65535 + 1
        body = self.topic + self.mid.to_bytes(2, "big") + packet_body
        self.out += b"\x32" + encode_varint(len(body)) + body
        self.in_flight += 1

    def read(self) -> None:
        data = self.rest + self.sock.recv(65536)
        at = 0
        while len(data) - at >= 2:  # PUBACKs are short: one length byte
            length = data[at + 1]
            if len(data) - at < 2 + length:
                break
            if data[at] == 0x40:
                self.in_flight -= 1
                self.acked += 1
            at += 2 + length
        self.rest = data[at:]
        while self.waiting and self.in_flight < WINDOW:
            self._send(self.waiting.popleft())

    def flush(self) -> None:
        if self.out:
            sent = self.sock.send(self.out)
            del self.out[:sent]


def main() -> int:
    args = publisher_args("python -m bench.lean")
    selector = selectors.DefaultSelector()
    connections = []
    for index, path in enumerate(args.sockets):
        serial = path.rsplit("/", 1)[1].removesuffix(".sock")
        connection = Connection(args.port, f"bench-lean-{index}", serial)
        connections.append(connection)
        selector.register(connection.sock, selectors.EVENT_READ, connection)
        feed = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        feed.connect(path)
        feed.setblocking(False)
        selector.register(feed, selectors.EVENT_READ, (connection, Reassembler(), [0]))
    print("ready", flush=True)
    boot = "0123456789abcdef"
    while True:
        for key, _ in selector.select():
            if isinstance(key.data, Connection):
                key.data.read()
                continue
            connection, reassembler, seq = key.data
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            while True:
                try:
                    report = sock.recv(64)
                except BlockingIOError:
                    break
                if not report:
                    return 0
                for event in reassembler.feed(report):
                    if isinstance(event, MessageReceived):
                        data = event.message
                        parse_message(data)
                        seq[0] += 1
                        properties = encode_publish_properties(
                            (("boot_id", boot), ("seq", str(seq[0]))), expiry_interval=300)
                        connection.publish(properties + data.hex().upper().encode("ascii"))
        for connection in connections:
            connection.flush()


if __name__ == "__main__":
    raise SystemExit(main())
