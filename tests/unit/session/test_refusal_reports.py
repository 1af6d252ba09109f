"""A reader session's coalesced refusal summaries come from the bridge's I/O loop, not from a
thread of their own (one loop owns what is published; issue 18)."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from bridge.command_intake import CommandIntake
from bridge.courier import Courier, CourierOptions
from bridge.intake import Rejection
from bridge.metrics import Metrics
from bridge.mqtt.link import LinkOptions
from bridge.mqtt.loop import IoLoop
from bridge.session import ReaderSession, SessionOptions
from bridge.transport.simulated import SimulatedBus
from tests.unit.test_throttle import _started_since

BAD = Rejection("not_hex", "payload is not hex")


def test_a_flood_summary_is_sent_on_the_io_loop(monkeypatch):
    reports: list[tuple[str, int, str]] = []
    summary = threading.Event()

    def report(self, report, topic, size, correlation_data):
        reports.append((report.reason, report.suppressed, threading.current_thread().name))
        if report.reason == "summary":
            summary.set()

    monkeypatch.setattr(CommandIntake, "_report", report)
    loop = IoLoop(name="session-test-io")
    loop.start()
    bus = SimulatedBus(count=1, auto_present=None)
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    session = ReaderSession(
        bus.open(bus.enumerate()[0]),
        options=SessionOptions(error_interval=0.2, error_burst=3),
        link_options=LinkOptions(port=1),
        metrics=metrics,
        courier=Courier(CourierOptions(), metrics=metrics, loop=loop),
        boot_id="test",
        next_seq=lambda _serial: 0,
    )
    before = set(threading.enumerate())
    try:
        for _ in range(20):
            session.reject(BAD, topic="MagTek/Device/X/B1/SendCommand", size=2)
        assert [r[:2] for r in reports] == [("not_hex", 0)] * 3
        assert not _started_since(before)  # nothing started to wait for the slot
        assert summary.wait(10)
        assert reports[-1] == ("summary", 17, "session-test-io")
    finally:
        session._intake.close()
        loop.stop()
