"""An observer that raises (a bug beside MQTT, the WebSocket endpoint's for one) is logged and
the reader carries on: its session stays up, commands still get their responses."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from bridge.courier import Courier, CourierOptions
from bridge.intake import Command
from bridge.metrics import Metrics
from bridge.mms import MessageType, commands, parse_message
from bridge.mqtt.link import LinkOptions
from bridge.session import ReaderSession, SessionOptions
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import wait_until


class BrokenObserver:
    """Records what it is handed, then raises, on every call."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.responses: list[int] = []

    def reader_connected(self, session: ReaderSession) -> None:
        self.calls.append("reader_connected")
        raise RuntimeError("observer bug")

    def reader_message(self, session: ReaderSession, payload: bytes) -> None:
        self.calls.append("reader_message")
        message = parse_message(bytes.fromhex(payload.decode()))
        if message.message_type == MessageType.DEVICE_RESPONSE:
            self.responses.append(message.ref)
        raise RuntimeError("observer bug")

    def reader_disconnected(self, session: ReaderSession) -> None:
        self.calls.append("reader_disconnected")
        raise RuntimeError("observer bug")


def test_an_observer_that_raises_does_not_take_the_reader_down() -> None:
    bus = SimulatedBus(count=1, auto_present=None)
    observer = BrokenObserver()
    identified = threading.Event()
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    session = ReaderSession(
        bus.open(bus.enumerate()[0]),
        options=SessionOptions(),
        link_options=LinkOptions(port=1),  # no broker: the command comes through submit()
        metrics=metrics,
        courier=Courier(CourierOptions(), metrics=metrics),
        boot_id="test",
        next_seq=lambda _serial: 0,
        on_identified=lambda _session: identified.set(),
        observers=(observer,),
    )
    with capture_logs() as logs:
        session.start()
        try:
            assert identified.wait(10)
            assert wait_until(lambda: "reader_connected" in observer.calls, 10)
            assert isinstance(session.submit(commands.get_serial_number(0x51).hex().encode()),
                              Command)
            assert wait_until(lambda: 0x51 in observer.responses, 10)
            assert session.alive and session.failure is None
            assert not session.stopping.is_set()
        finally:
            session.stop()
            session.join(10)
    assert session.finished.is_set()
    assert observer.calls[-1] == "reader_disconnected"
    failed = [e for e in logs if e["event"] == "observer_failed"]
    assert {e["method"] for e in failed} == {
        "reader_connected", "reader_message", "reader_disconnected"}
    assert all(e["observer"] == "BrokenObserver" for e in failed)
