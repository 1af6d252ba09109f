"""What a session publishes: each PUBLISH encoded onto the current connection (topic names
checked and kept encoded, v5 properties, the broker's Maximum Packet Size held to), and the
untracked publishes (status, error, response) held while no connection is up."""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from bridge.metrics import Metrics
from bridge.mqtt import packets
from bridge.mqtt.encoding import encode_publish_properties
from bridge.mqtt.wire import Connection

HELD_LIMIT: Final = 1000  # publishes held while not connected (oldest dropped beyond)
_TOPIC_CACHE: Final = 4096  # encoded topic names kept (a reader publishes to a handful)
_NO_PROPERTIES: Final = b"\x00"

# topic, payload, qos, retain, user properties, correlation data, kind, expiry interval
Held = tuple[str, bytes, int, bool, tuple[tuple[str, str], ...], bytes | None, str, int | None]


class Publisher:
    """The outbound side of a session (owned by the I/O loop's thread)."""

    def __init__(self, *, v5: bool, metrics: Metrics | None, log: Any) -> None:
        self.v5 = v5
        self.max_packet_size = 0  # the broker's limit from its v5 CONNACK; 0: none said
        self.max_qos = 2  # its Maximum QoS
        self.retain_available = True
        self.held: deque[Held] = deque(maxlen=HELD_LIMIT)
        self._metrics = metrics
        self._log = log
        self._topics: dict[str, bytes] = {}

    def limits(self, connack_properties: dict[str, object]) -> None:
        """What the broker's v5 CONNACK allows (§3.2.2.3): a publish above its Maximum QoS,
        or retained where it has none, is a protocol error it disconnects us for."""
        size = connack_properties.get("MaximumPacketSize", 0)
        qos = connack_properties.get("MaximumQoS", 2)
        retain = connack_properties.get("RetainAvailable", 1)
        self.max_packet_size = size if isinstance(size, int) else 0
        self.max_qos = qos if isinstance(qos, int) else 2
        self.retain_available = retain != 0
        if self.max_qos < 2 or not self.retain_available:
            self._log.warning("mqtt_broker_limits", maximum_qos=self.max_qos,
                        retain_available=self.retain_available,
                        effect="publishes above it go at its maximum QoS; retained ones "
                               "unretained (Status is then not kept for late subscribers)")

    def hold(self, item: Held) -> None:
        if len(self.held) == self.held.maxlen:
            self.failed(self.held[0][0], "too many publishes held while disconnected")
        self.held.append(item)

    def send(self, conn: Connection, item: Held) -> int | None:
        """Encode ``item`` onto ``conn``: its packet id (0 at QoS 0), or None if refused."""
        topic, payload, qos, retain, user_properties, correlation, kind, expiry = item
        qos = min(qos, self.max_qos)
        if retain and not self.retain_available:
            retain = False
        properties: bytes | None = None
        if self.v5:
            properties = _NO_PROPERTIES
            if user_properties or correlation is not None or expiry is not None:
                properties = encode_publish_properties(
                    user_properties, correlation_data=correlation, expiry_interval=expiry)
        mid = self._queue(conn, topic, payload, qos, properties, retain=retain)
        if mid is not None and self._metrics is not None:
            self._metrics.mqtt_publish(kind)
        return mid

    def send_message(self, conn: Connection, topic: str, payload: bytes, qos: int,
                     properties: bytes | None) -> int | None:
        """A device message (``MqttLink.publish_message``): properties already encoded."""
        if not self.v5:
            properties = None
        elif properties is None:
            properties = _NO_PROPERTIES
        return self._queue(conn, topic, payload, min(qos, self.max_qos), properties)

    def _queue(self, conn: Connection, topic: str, payload: bytes, qos: int,
               properties: bytes | None, *, retain: bool = False) -> int | None:
        mid = 0
        try:
            name = self._topics.get(topic)
            if name is None:
                name = packets.check_topic(topic)
                if len(self._topics) >= _TOPIC_CACHE:
                    self._topics.clear()
                self._topics[topic] = name
            mid = conn.next_mid() if qos else 0
            packet = packets.encode_publish(name, payload, qos=qos, mid=mid, retain=retain,
                                            properties=properties)
        except ValueError as exc:
            conn.release_mid(mid)
            self.failed(topic, str(exc))
            return None
        limit = self.max_packet_size
        if limit and len(packet) > limit:
            # The broker would drop the connection over it (and a re-send would again).
            conn.release_mid(mid)
            self.failed(topic, f"{len(packet)} bytes, over the broker's maximum packet size "
                               f"of {limit}")
            return None
        if qos:
            conn.send_tracked(mid, packet)
        else:
            conn.out += packet
        return mid

    def failed(self, topic: str, error: str) -> None:
        if self._metrics is not None:
            self._metrics.mqtt_publish_failures.inc()
        self._log.warning("mqtt_publish_failed", topic=topic, error=error)


__all__ = ["HELD_LIMIT", "Held", "Publisher"]
