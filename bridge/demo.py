"""``magtek-bridge demo``: the whole product on one machine with nothing else installed.

An embedded broker (amqtt, pure Python, MQTT 3.1.1) on a free loopback port, one simulated
DynaFlex II, the bridge itself, and a scripted consumer that does what a MagTek MQTT client
does: find the reader by its retained Status, ask for its serial number and firmware, start a
transaction, and print every message as it flows (card data masked).
"""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
import time
from typing import Any, Final, TextIO

from bridge.app import BridgeApp, link_options
from bridge.config import load_settings
from bridge.logs import configure_logging
from bridge.mms import MessageType, commands, describe, parse_message
from bridge.mqtt.link import InboundMessage, MqttLink
from bridge.mqtt.topics import ReaderTopics, device_list_wildcard
from bridge.transport import get_backend

_STEP_TIMEOUT: Final = 10.0
_TRANSACTION_DONE: Final = 0x0105  # Transaction Operation Complete (PROTOCOL.md §5)


class EmbeddedBroker:
    """amqtt running on its own event loop in a background thread."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-broker",
                                        daemon=True)
        self._broker: Any = None

    def start(self) -> None:
        from amqtt.broker import Broker  # noqa: PLC0415 - optional dependency (demo extra)

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        self._thread.start()

        async def _start() -> Any:
            broker = Broker(config)
            await broker.start()
            return broker

        self._broker = asyncio.run_coroutine_threadsafe(_start(), self._loop).result(10)

    def stop(self) -> None:
        if self._broker is not None:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Consumer:
    def __init__(self, link: MqttLink, inbox: queue.Queue[InboundMessage], out: TextIO) -> None:
        self.link = link
        self.inbox = inbox
        self.out = out
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.3f}s] {text}", file=self.out, flush=True)

    def next(self, timeout: float) -> InboundMessage | None:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None


def run_demo(card: str = "tap", log_level: str = "warning", out: TextIO | None = None) -> int:
    """Run the scripted demo; returns 0 when the whole transaction flowed."""
    import sys  # noqa: PLC0415

    stream = out if out is not None else sys.stdout
    configure_logging(log_level, "console")
    broker = EmbeddedBroker()
    broker.start()
    settings = load_settings(None, environ={}, overrides={
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "protocol": "3.1.1"},
        "readers": {"backend": "simulated", "simulate": 1},
        "metrics": {"enabled": False},
        "logging": {"level": log_level},
    })
    backend = get_backend("simulated", count=1, card_scenario=card)
    app = BridgeApp(settings, backend=backend)
    inbox: queue.Queue[InboundMessage] = queue.Queue()
    link = MqttLink(link_options(settings), client_id="magtek-demo-consumer", name="demo",
                    subscriptions=[(device_list_wildcard(settings.topics.prefix), 1),
                                   (f"{settings.topics.prefix}+/+/MMSMessage", 1)],
                    on_message=inbox.put)
    consumer = _Consumer(link, inbox, stream)
    consumer.say(f"embedded MQTT broker on 127.0.0.1:{broker.port}; starting the bridge with "
                 "one simulated DynaFlex II")
    try:
        link.start()
        app.start()
        return _script(consumer, card)
    finally:
        link.stop()
        app.stop()
        broker.stop()


def _script(c: _Consumer, card: str) -> int:
    root = None
    deadline = time.monotonic() + _STEP_TIMEOUT
    while root is None and time.monotonic() < deadline:
        msg = c.next(0.2)
        if msg is not None and msg.payload == b"connected":
            root = msg.topic.removesuffix("/Status")
    if root is None:
        c.say("no reader announced itself: giving up")
        return 1
    c.say(f"reader connected: {root}/Status = connected")
    topics = ReaderTopics.for_root(root)
    steps = [
        ("get serial number", commands.get_serial_number(), None),
        ("get firmware id", commands.get_firmware_id(), None),
        (f"start transaction ($1.00), card: {card}",
         commands.start_transaction(0x01, amount_cents=100), _TRANSACTION_DONE),
    ]
    for title, command, until in steps:
        request = parse_message(command)
        c.say(f"-> SendCommand ({title}): {command.hex().upper()}")
        c.link.publish(topics.send_command, command.hex().upper().encode(), qos=1)
        if not _follow(c, topics, request.ref, request.command_id, until):
            c.say("timed out waiting for the reader")
            return 1
    c.say("done: the whole transaction flowed through MQTT")
    return 0


def _follow(c: _Consumer, topics: ReaderTopics, ref: int, command_id: int,
            until_notification: int | None) -> bool:
    deadline = time.monotonic() + _STEP_TIMEOUT
    answered = False
    while time.monotonic() < deadline:
        msg = c.next(0.2)
        if msg is None or msg.topic != topics.mms_message:
            continue
        parsed = parse_message(bytes.fromhex(msg.payload.decode()))
        c.say(f"<- MMSMessage {describe(parsed)}")
        if parsed.message_type == MessageType.DEVICE_RESPONSE and (
                parsed.ref, parsed.command_id) == (ref, command_id):
            answered = True
            if until_notification is None:
                return True
        if (answered and until_notification is not None
                and parsed.message_type == MessageType.DEVICE_NOTIFICATION
                and parsed.command_id == until_notification):
            return True
    return False


__all__ = ["EmbeddedBroker", "run_demo"]
