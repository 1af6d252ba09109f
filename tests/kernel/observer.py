"""What the kernel scenario watches with: an MQTT observer of MagTek/# on the guest's broker,
and the messages an identical simulated reader answers (the bytes the bridge must deliver)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt

from bridge.mms import Reassembler, packetize
from bridge.mms.packets import MessageReceived
from bridge.simulator import SimulatedReader

PORT: Final = 1883
WAIT_S: Final = 60.0  # generous: TCG is slow and the machine is shared


@dataclass
class Seen:
    at: float
    topic: str
    payload: bytes
    retain: bool


class Watch:
    """Everything published under MagTek/#, with arrival times (the test's observer)."""

    def __init__(self) -> None:
        self.messages: list[Seen] = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="kernel-watch")
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *_: c.subscribe("MagTek/#", qos=1)
        self._client.connect("127.0.0.1", PORT)
        self._client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Seen(time.monotonic(), msg.topic, bytes(msg.payload),
                                      bool(msg.retain)))
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def wait(self, since: int, match: Callable[[Seen], bool],
             timeout: float = WAIT_S) -> Seen | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for seen in self.messages[since:]:
                    if match(seen):
                        return seen
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def after(self, since: int, topic: str) -> list[bytes]:
        with self._cond:
            return [s.payload for s in self.messages[since:] if s.topic == topic]

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(10)

    def retained(self, topic: str, timeout: float = 10.0) -> bytes | None:
        """What a new subscriber gets as the retained message of ``topic``."""
        box: list[bytes] = []
        got = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

        def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
            if msg.retain:
                box.append(bytes(msg.payload))
                got.set()

        client.on_message = on_message
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.connect("127.0.0.1", PORT)
        client.loop_start()
        got.wait(timeout)
        client.loop_stop()
        client.disconnect()
        return box[0] if box else None

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def status_is(root: str, value: bytes) -> Callable[[Seen], bool]:
    return lambda s: s.topic == f"{root}/Status" and s.payload == value


def expected_messages(serial: str, command: bytes, settle: float = 1.5,
                      card: str | None = None) -> list[bytes]:
    """What an identical simulated reader answers to ``command``: the bytes the bridge must
    deliver unchanged (it was fed straight, with no kernel and no bridge in between)."""
    twin = SimulatedReader(serial, auto_present=card)  # type: ignore[arg-type]
    for report in packetize(command, twin.report_len):
        twin.handle_host_report(report)
    messages = []
    reassembler = Reassembler(report_len=twin.report_len)
    deadline = time.monotonic() + settle
    while (left := deadline - time.monotonic()) > 0:
        report = twin.next_device_report(left)
        if report is None:
            break
        messages += [e.message for e in reassembler.feed(report) if isinstance(e, MessageReceived)]
    return messages
