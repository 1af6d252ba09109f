"""Commands without a writer thread per reader (issue 18): the pipeline runs on the I/O loop,
HID writes on one shared ``HidWriter`` thread.

Every wait is bounded and nothing is timed: a wedged device is a write that blocks on an
event until the test releases it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from bridge.courier import Courier, CourierOptions
from bridge.hid_writer import HidWriter
from bridge.intake import Command
from bridge.metrics import Metrics
from bridge.mms import MessageType, commands, packetize, parse_message
from bridge.mqtt.link import LinkOptions
from bridge.mqtt.loop import default_loop
from bridge.session import ReaderSession, SessionOptions
from bridge.transport import REPORT_LEN
from bridge.transport.simulated import SimulatedBus, SimulatedTransport
from tests.integration.harness import wait_until


@dataclass
class Device:
    """A simulated reader whose writes can be wedged (block until released) or dropped."""

    transport: SimulatedTransport
    identified: threading.Event = field(default_factory=threading.Event)
    wedge: bool = False  # once identified, every write blocks until ``release``
    wedged: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    drop: bytes = b""  # this report is swallowed (no response ever comes)
    in_write: int = 0
    closes: int = 0
    closes_during_write: int = 0
    responses: list[int] = field(default_factory=list)  # refs of device responses, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        write, close = self.transport.write_report, self.transport.close

        def write_report(report: bytes) -> None:
            with self.lock:
                self.in_write += 1
            try:
                if self.wedge and self.identified.is_set():
                    self.wedged.set()
                    self.release.wait(60)
                if report == self.drop:
                    return
                write(report)
            finally:
                with self.lock:
                    self.in_write -= 1

        def close_transport() -> None:
            with self.lock:
                self.closes += 1
                if self.in_write:
                    self.closes_during_write += 1
            close()

        self.transport.write_report = write_report  # type: ignore[method-assign]
        self.transport.close = close_transport  # type: ignore[method-assign]

    # ReaderObserver: the messages the session hands on, as published on MMSMessage.
    def reader_connected(self, session: ReaderSession) -> None:
        pass

    def reader_message(self, session: ReaderSession, payload: bytes) -> None:
        message = parse_message(bytes.fromhex(payload.decode()))
        if message.message_type == MessageType.DEVICE_RESPONSE:
            self.responses.append(message.ref)

    def reader_disconnected(self, session: ReaderSession) -> None:
        pass


def _session(device: Device, writer: HidWriter | None, **options: float) -> ReaderSession:
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    return ReaderSession(
        device.transport,
        options=SessionOptions(identify_timeout=2.0, **options),  # type: ignore[arg-type]
        link_options=LinkOptions(port=1),  # no broker: commands come through submit()
        metrics=metrics,
        courier=Courier(CourierOptions(), metrics=metrics),
        boot_id="test",
        next_seq=lambda _serial: 0,
        on_identified=lambda _session: device.identified.set(),
        observers=(device,),
        writer=writer,
    )


def _command(ref: int) -> bytes:
    return commands.get_serial_number(ref).hex().encode()


@pytest.fixture
def writer() -> Iterator[HidWriter]:
    shared = HidWriter(default_loop(), stall_after=0.05)
    yield shared
    shared.stop()


def test_a_wedged_write_does_not_hold_up_another_readers_commands(writer: HidWriter) -> None:
    bus = SimulatedBus(count=2, auto_present=None)
    a, b = (Device(bus.open(info)) for info in bus.enumerate())
    a.wedge = True
    sessions = [_session(a, writer), _session(b, writer)]
    for session in sessions:
        session.start()
    try:
        assert a.identified.wait(10) and b.identified.wait(10)
        assert isinstance(sessions[0].submit(_command(0x11)), Command)
        assert a.wedged.wait(10)
        assert isinstance(sessions[1].submit(_command(0x22)), Command)
        # B's command is written and answered while A's write still has not returned.
        assert wait_until(lambda: 0x22 in b.responses, 10)
        assert not a.release.is_set() and sessions[0].writer_busy_since is not None
        assert writer.abandoned_threads == 1
        assert 0x11 not in a.responses
    finally:
        a.release.set()
        for session in sessions:
            session.stop()
        for session in sessions:
            session.join(10)


def test_one_writer_thread_serves_every_reader(writer: HidWriter) -> None:
    bus = SimulatedBus(count=3, auto_present=None)
    devices = [Device(bus.open(info)) for info in bus.enumerate()]
    sessions = [_session(device, writer) for device in devices]
    for session in sessions:
        session.start()
    try:
        for device in devices:
            assert device.identified.wait(10)
        for ref in range(0x30, 0x35):
            for session in sessions:
                assert isinstance(session.submit(_command(ref)), Command)
        for device in devices:
            assert wait_until(lambda d=device: d.responses[-5:] == list(range(0x30, 0x35)), 10)
        assert [t.name for t in writer.threads] == ["hid-write"]
        assert writer.abandoned_threads == 0
        # One thread of its own per reader: the read thread.
        names = {t.name for t in threading.enumerate()}
        for session in sessions:
            assert f"hid-read[{session.info.path}]" in names
            assert f"reader[{session.info.path}]" not in names
    finally:
        for session in sessions:
            session.stop()
        for session in sessions:
            session.join(10)


def test_a_command_without_response_times_out_and_the_next_one_runs(
        writer: HidWriter) -> None:
    bus = SimulatedBus(count=1, auto_present=None)
    device = Device(bus.open(bus.enumerate()[0]))
    device.drop = packetize(commands.get_serial_number(0x41), REPORT_LEN)[0]  # one report
    session = _session(device, writer, command_timeout=0.2)
    timeouts_seen_first: list[bool] = []
    with capture_logs() as logs:
        session.start()
        try:
            assert device.identified.wait(10)
            session.submit(_command(0x41))  # swallowed by the device: never answered
            session.submit(_command(0x42))  # written only once the first one has timed out
            assert wait_until(lambda: 0x42 in device.responses, 10)
            timeouts_seen_first.append(any(e["event"] == "command_timeout" for e in logs))
        finally:
            session.stop()
            session.join(10)
    timeouts = [e for e in logs if e["event"] == "command_timeout"]
    assert timeouts_seen_first == [True]
    assert [(e["ref"], e["command_id"]) for e in timeouts] == [(0x41, "D101")]
    assert 0x41 not in device.responses


def test_an_expired_command_is_refused_not_written(writer: HidWriter) -> None:
    bus = SimulatedBus(count=1, auto_present=None)
    device = Device(bus.open(bus.enumerate()[0]))
    device.wedge = True
    session = _session(device, writer)
    with capture_logs() as logs:
        session.start()
        try:
            assert device.identified.wait(10)
            session.submit(_command(0x51))
            assert device.wedged.wait(10)
            # Queued behind the wedged write, its one-second expiry passes before its turn.
            session.submit(_command(0x52), expiry_interval=1,
                           received_at=time.monotonic() - 2.0)
            device.wedge = False
            device.release.set()
            assert wait_until(lambda: any(e.get("reason") == "expired" for e in logs), 10)
            assert wait_until(lambda: 0x51 in device.responses, 10)
        finally:
            session.stop()
            session.join(10)
    assert 0x52 not in device.responses


def test_stop_during_a_wedged_write_ends_the_session_and_closes_after_the_write() -> None:
    bus = SimulatedBus(count=1, auto_present=None)
    device = Device(bus.open(bus.enumerate()[0]))
    device.wedge = True
    writer = HidWriter(default_loop())
    session = _session(device, writer)
    session.start()
    try:
        assert device.identified.wait(10)
        session.submit(_command(0x61))
        assert device.wedged.wait(10)
        session.stop()
        assert session.finished.wait(15)  # not held up by the write
        session.join(10)
        assert device.closes == 0  # never closed under the write
        device.release.set()
        assert wait_until(lambda: device.closes == 1, 10)
        assert device.closes_during_write == 0
        writer.stop()
        for thread in writer.threads:
            thread.join(10)
            assert not thread.is_alive()
    finally:
        device.release.set()
        writer.stop()


def test_stop_while_the_read_thread_is_stuck_in_the_device(writer: HidWriter) -> None:
    bus = SimulatedBus(count=1, auto_present=None)
    device = Device(bus.open(bus.enumerate()[0]))
    read = device.transport.read_report
    stuck, release = threading.Event(), threading.Event()
    reads_after_close: list[int] = []

    def wedging_read(timeout: float) -> bytes | None:
        if device.closes:
            reads_after_close.append(1)
        if device.identified.is_set():
            stuck.set()
            release.wait(60)  # a device that never returns the read
        return read(timeout)

    device.transport.read_report = wedging_read  # type: ignore[method-assign]
    session = _session(device, writer)
    session.start()
    try:
        assert device.identified.wait(10)
        assert stuck.wait(10)
        session.stop()
        # Ended without the read thread (a loop timer hands the shutdown to another thread).
        assert session.finished.wait(15)
        assert device.closes == 0
        release.set()
        session.join(15)
        assert device.closes == 1
        assert reads_after_close == []
    finally:
        release.set()
