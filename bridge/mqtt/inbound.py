"""Messages the broker delivers to one session: handed to the owner once, acknowledged as
MQTT asks (QoS 1: PUBACK; QoS 2: PUBREC, then PUBCOMP on PUBREL), on the I/O loop's thread.

With ``manual_ack`` a QoS 1 message is acknowledged when the owner says it is handled
(``InboundMessage.ack``, from any thread), still in the order the messages came (MQTT §4.6):
the broker redelivers what a persistent session had not acknowledged when we vanished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bridge.mqtt import packets
from bridge.mqtt.options import InboundMessage
from bridge.mqtt.wire import Connection

MessageHandler = Callable[[InboundMessage], None]


class Deliveries:
    """The inbound side of a session (owned by the I/O loop's thread)."""

    def __init__(self, handler: MessageHandler | None, *, manual_ack: bool,
                 on_loop: Callable[[Callable[[], None]], None], log: Any) -> None:
        self._handler = handler
        self._manual = manual_ack and handler is not None
        self._on_loop = on_loop  # runs a call on the loop's thread (at once when already there)
        self._log = log
        self._current: Connection | None = None
        self._qos2: set[int] = set()  # QoS 2 deliveries handed over, waiting for PUBREL
        self._unacked: dict[int, bool] = {}  # manual: QoS 1 ids in arrival order, True = done

    def opened(self, conn: Connection, *, session_present: bool) -> None:
        """A CONNACK: a new session forgets QoS 2 deliveries in progress; a resumed one keeps
        them, so the broker's DUP resend is not handed over twice (§4.3.3)."""
        self._current = conn
        if not session_present:
            self._qos2.clear()

    def ended(self) -> None:
        """The connection is gone: unacknowledged QoS 1 messages come again with the session."""
        self._current = None
        self._unacked.clear()

    def publish(self, conn: Connection, message: packets.Publish) -> None:
        if message.qos == 2:
            if message.mid not in self._qos2:
                self._qos2.add(message.mid)
                self._deliver(message, None)
            conn.out += packets.encode_ack(packets.PUBREC, message.mid)
        elif message.qos == 1 and self._manual:
            if message.mid in self._unacked:
                return  # still being handled: its acknowledgement will come
            self._unacked[message.mid] = False
            self._deliver(message, self._acknowledger(conn, message.mid))
        else:
            self._deliver(message, None)
            if message.qos == 1:
                conn.out += packets.encode_ack(packets.PUBACK, message.mid)

    def release(self, conn: Connection, mid: int) -> None:
        """PUBREL: the broker's QoS 2 delivery is complete."""
        self._qos2.discard(mid)
        conn.out += packets.encode_ack(packets.PUBCOMP, mid)

    def _acknowledger(self, conn: Connection, mid: int) -> Callable[[], None]:
        def handled() -> None:
            self._on_loop(lambda: self._handled(conn, mid))
        return handled

    def _handled(self, conn: Connection, mid: int) -> None:
        if self._current is not conn or mid not in self._unacked:
            return  # that connection ended: the broker sends the message again
        self._unacked[mid] = True
        for first, done in list(self._unacked.items()):  # in arrival order
            if not done:
                break
            del self._unacked[first]
            conn.out += packets.encode_ack(packets.PUBACK, first)

    def _deliver(self, message: packets.Publish, ack: Callable[[], None] | None) -> None:
        handler = self._handler
        if handler is None:
            return
        props = message.properties
        response_topic = props.get("ResponseTopic")
        correlation = props.get("CorrelationData")
        expiry = props.get("MessageExpiryInterval")
        inbound = InboundMessage(
            topic=message.topic,
            payload=message.payload,
            retain=message.retain,
            qos=message.qos,
            received_at=time.monotonic(),
            response_topic=response_topic if isinstance(response_topic, str) else None,
            correlation_data=correlation if isinstance(correlation, bytes) else None,
            expiry_interval=expiry if isinstance(expiry, int) else None,
            duplicate=message.dup,
            ack=ack,
        )
        try:
            handler(inbound)
        except Exception:  # a handler bug must not stop the I/O loop
            self._log.exception("mqtt_handler_failed", topic=message.topic)
            if ack is not None:
                ack()  # nobody else will: it would hold back every later acknowledgement


__all__ = ["Deliveries", "MessageHandler"]
