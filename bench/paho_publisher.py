"""Baseline: a bare paho publisher (``loop_start``) fed exactly like the bridge.

``python -m bench.paho_publisher --port P SOCKET...`` reads the feeder's reports the way the
bridge does (one ``recv`` per report, the project's ``Reassembler``, ``parse_message``,
upper-case hex), and publishes each message at QoS 1, MQTT v5, with the same user properties
(``boot_id``, ``seq``) and message expiry, pre-encoded with the bridge's own encoder and handed
to paho through ``PackedProperties`` (the bridge sends the same bytes). One paho client per
reader, each with paho's own network thread. Nothing else: no outbox, no spool, no reconnect
handling. Prints ``ready`` once connected.
"""

from __future__ import annotations

import copy
import selectors
import socket
import threading
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import publisher_args, topic_for
from bridge.mms import MessageReceived, Reassembler, parse_message
from bridge.mqtt.encoding import encode_publish_properties


class PackedProperties(Properties):
    """PUBLISH properties already encoded (``encode_publish_properties``), as the bridge sends
    them: paho's own class checks every attribute set and re-encodes on every send, which
    would double the baseline's cost; the baseline gets the same advantage as the bridge.
    A regular subclass: paho's constructor runs, only ``pack`` is ours. ``of()`` copies one
    constructed prototype (the copy protocol): a quarter of the cost of running the
    constructor per message."""

    packed: bytes

    def __init__(self, packed: bytes) -> None:
        super().__init__(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        object.__setattr__(self, "packed", packed)  # not a property name: skip paho's check

    @classmethod
    def of(cls, packed: bytes) -> PackedProperties:
        properties = copy.copy(_PROTOTYPE)
        object.__setattr__(properties, "packed", packed)
        return properties

    def pack(self) -> bytes:
        return self.packed

    def __str__(self) -> str:
        return f"<{len(self.packed)} bytes of properties>"


_PROTOTYPE: Final = PackedProperties(b"")


def main() -> int:
    args = publisher_args("python -m bench.paho_publisher")
    selector = selectors.DefaultSelector()
    for index, path in enumerate(args.sockets):
        serial = path.rsplit("/", 1)[1].removesuffix(".sock")
        connected = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{index}",
                             protocol=paho.MQTTv5)
        client.on_socket_open = lambda c, u, s: s.setsockopt(socket.IPPROTO_TCP,
                                                             socket.TCP_NODELAY, 1)
        client.on_connect = lambda *a, e=connected: e.set()  # type: ignore[misc]
        client.max_inflight_messages_set(0)
        client.connect("127.0.0.1", args.port)
        client.loop_start()
        connected.wait(10)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(path)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ,
                          (client, topic_for(serial), Reassembler(), [0]))
    print("ready", flush=True)
    boot = "0123456789abcdef"
    while True:
        for key, _ in selector.select():
            sock = key.fileobj  # type: ignore[assignment]
            client, topic, reassembler, seq = key.data
            while True:
                try:
                    report = sock.recv(64)
                except BlockingIOError:
                    break
                if not report:
                    return 0
                for event in reassembler.feed(report):
                    if isinstance(event, MessageReceived):
                        publish(client, topic, event.message, boot, seq)


def publish(client: Any, topic: str, data: bytes, boot: str, seq: list[int]) -> None:
    parse_message(data)
    payload = data.hex().upper().encode("ascii")
    seq[0] += 1
    properties = PackedProperties.of(encode_publish_properties(
        (("boot_id", boot), ("seq", str(seq[0]))), expiry_interval=300))
    client.publish(topic, payload, qos=1, properties=properties)


if __name__ == "__main__":
    raise SystemExit(main())
