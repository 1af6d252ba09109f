"""The systemd watchdog sees a writer thread stuck on a wedged device (issue 16, item 7).

The writer is idle (``writer_busy_since`` None) while it waits for a command, busy while it
writes one and waits for its response; a write that never returns keeps it busy, and the
bridge's liveness (what gates ``WATCHDOG=1``) names that reader once the command could not
possibly still be running.
"""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

import bridge.health
from bridge.app import BridgeApp
from bridge.config import load_settings
from bridge.courier import Courier, CourierOptions
from bridge.intake import Command
from bridge.metrics import Metrics
from bridge.mms import commands
from bridge.mqtt.link import LinkOptions
from bridge.session import ReaderSession, SessionOptions
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import wait_until


@pytest.fixture
def wedged_session():
    bus = SimulatedBus(count=1, auto_present=None)
    transport = bus.open(bus.enumerate()[0])
    identified = threading.Event()
    wedged = threading.Event()
    release = threading.Event()
    write = transport.write_report

    def wedging_write(report: bytes) -> None:
        if identified.is_set():  # after identification: the device stops taking reports
            wedged.set()
            release.wait(60)
        write(report)

    transport.write_report = wedging_write  # type: ignore[method-assign]
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    session = ReaderSession(
        transport,
        options=SessionOptions(command_timeout=0.05, identify_timeout=1.0),
        link_options=LinkOptions(port=1),  # no broker: the link retries in the background
        metrics=metrics,
        courier=Courier(CourierOptions(), metrics=metrics),
        boot_id="test",
        next_seq=lambda _serial: 0,
        on_identified=lambda _session: identified.set(),
    )
    session.start()
    assert identified.wait(10)
    yield session, wedged
    release.set()
    session.stop()
    session.join(10)


def test_writer_is_idle_between_commands_and_busy_while_wedged(wedged_session):
    session, wedged = wedged_session
    assert session.writer_busy_since is None  # waiting on its queue, not polling
    accepted = session.submit(commands.get_serial_number(7).hex().encode())
    assert isinstance(accepted, Command)
    assert wedged.wait(10)
    assert session.writer_busy_since is not None


def test_liveness_names_the_wedged_writer(wedged_session, monkeypatch):
    session, wedged = wedged_session
    monkeypatch.setattr(bridge.health, "STUCK_AFTER", 0.05)
    settings = load_settings(None, environ={}, overrides={
        "metrics": {"enabled": False}, "readers": {"backend": "simulated"}})
    app = BridgeApp(settings, backend=SimulatedBus(count=0),
                    metrics=Metrics(CollectorRegistry(), process_metrics=False))
    monkeypatch.setattr(app.supervisor, "sessions", lambda: [session])
    name = f"reader[{session.info.path}]"
    assert name not in app.liveness()[1]["stuck"]  # idle writer: fine however long
    session.submit(commands.get_serial_number(8).hex().encode())
    assert wedged.wait(10)
    assert wait_until(lambda: name in app.liveness()[1]["stuck"], 10)
    assert app.liveness()[0] is False
