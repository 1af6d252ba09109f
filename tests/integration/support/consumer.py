"""A consumer that must not miss anything: MQTT v5 persistent session, every delivery kept.

With ``clean_start=False`` and a session expiry, a broker running with persistence keeps the
subscription and queues QoS 1 messages while the consumer (or the broker) is away, so a
fault test measures what the bridge delivered, not what the test client missed.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.mms import parse_message

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivered device message: the number the test put in it and the bridge's tags."""

    number: int
    boot_id: str | None
    seq: int | None
    replayed: bool
    dup: bool

    @property
    def key(self) -> tuple[str | None, int | None]:
        return (self.boot_id, self.seq)


def message_number(payload_hex: bytes) -> int:
    """The counter a numbered test notification carries in its 4 detail bytes."""
    message = parse_message(bytes.fromhex(payload_hex.decode()))
    return int.from_bytes(message.notification_detail or b"", "big")


class DurableConsumer:
    def __init__(self, host: str, port: int, topic: str) -> None:
        self.topic = topic
        self.deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        client_id = f"durable-{os.getpid()}-{next(_ids)}"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._connected.set()
        self._connected = threading.Event()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect_async(host, port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._connected.wait(10):
            self.close()
            raise AssertionError(f"durable consumer could not connect to {host}:{port}")

    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, reason: Any,
                    _p: Any) -> None:
        if reason.is_failure:
            return
        if flags.session_present:
            self._connected.set()
        else:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        props = dict(getattr(message.properties, "UserProperty", None) or [])
        seq = props.get("seq")
        delivery = Delivery(
            number=message_number(message.payload),
            boot_id=props.get("boot_id"),
            seq=int(seq) if seq is not None else None,
            replayed=props.get("replayed") == "true",
            dup=bool(message.dup),
        )
        with self._cond:
            self.deliveries.append(delivery)
            self._cond.notify_all()

    def unique(self) -> list[Delivery]:
        """Deliveries with QoS 1 duplicates (same boot_id and seq) removed, in arrival order."""
        seen: set[tuple[str | None, int | None]] = set()
        result = []
        with self._cond:
            for delivery in self.deliveries:
                if delivery.key in seen and delivery.seq is not None:
                    continue
                seen.add(delivery.key)
                result.append(delivery)
        return result

    def numbers(self) -> list[int]:
        return [d.number for d in self.unique()]

    def wait_for_count(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.unique()) >= count:
                return True
            with self._cond:
                self._cond.wait(0.1)
        return len(self.unique()) >= count

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
