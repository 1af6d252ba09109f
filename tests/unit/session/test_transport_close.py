"""The transport handle is never closed while the read thread is inside ``read_report``.

hidapi's ``hid_close`` frees the device; a concurrent ``hid_read_timeout`` then reads freed
memory. ``BlockingLikeHidapi`` behaves like hidapi's read (blocks for the whole timeout when
the device is silent) and records every close that overlaps a read.
"""

from __future__ import annotations

import threading

from bridge.courier import Courier, CourierOptions
from bridge.metrics import Metrics
from bridge.mqtt.link import LinkOptions
from bridge.session import ReaderSession, SessionOptions
from bridge.transport import REPORT_LEN, DeviceInfo


class BlockingLikeHidapi:
    """A silent reader whose read blocks for the full timeout, as ``hid_read_timeout`` does."""

    def __init__(self) -> None:
        self._info = DeviceInfo(path="/dev/hidraw-test", vendor_id=0x0801, product_id=0x2024,
                                product="DynaFlex II Go", backend="test")
        self._lock = threading.Lock()
        self._in_read = 0
        self._closed = False
        self._wake = threading.Event()
        self.entered_read = threading.Event()
        self.overlaps = 0
        self.reads_after_close = 0
        self.closes = 0

    @property
    def info(self) -> DeviceInfo:
        return self._info

    @property
    def report_len(self) -> int:
        return REPORT_LEN

    def open(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            self.closes += 1
            if self._in_read:
                self.overlaps += 1
            self._closed = True

    def read_report(self, timeout: float) -> bytes | None:
        with self._lock:
            if self._closed:
                self.reads_after_close += 1
            self._in_read += 1
        self.entered_read.set()
        try:
            self._wake.wait(timeout)  # the device never answers
            return None
        finally:
            with self._lock:
                self._in_read -= 1

    def write_report(self, report: bytes) -> None:
        assert len(report) == REPORT_LEN


def _session(transport: BlockingLikeHidapi, read_timeout: float) -> ReaderSession:
    metrics = Metrics(process_metrics=False)
    return ReaderSession(
        transport,
        options=SessionOptions(read_timeout=read_timeout, identify_timeout=0.01,
                               identify_attempts=1),
        link_options=LinkOptions(),
        metrics=metrics,
        courier=Courier(CourierOptions(), metrics=metrics),
        boot_id="test",
        next_seq=lambda _serial: 0,
    )


def test_failed_identification_never_closes_during_a_read() -> None:
    # Identification gives up long before the read (0.3 s) returns: the old code closed the
    # handle right there, under the blocked read, every time.
    for _ in range(5):
        transport = BlockingLikeHidapi()
        session = _session(transport, read_timeout=0.3)
        session.start()
        assert session.finished.wait(10)
        session.join(10)
        assert session.failure == "reader did not answer the get-serial request"
        assert transport.entered_read.is_set()
        assert transport.closes == 1
        assert transport.overlaps == 0
        assert transport.reads_after_close == 0


def test_a_read_stuck_past_the_grace_is_closed_by_the_read_thread_when_it_leaves() -> None:
    transport = BlockingLikeHidapi()
    session = _session(transport, read_timeout=0.01)

    stuck = threading.Event()
    release = threading.Event()
    original = transport.read_report

    def stuck_read(timeout: float) -> bytes | None:
        if not stuck.is_set():
            stuck.set()
            release.wait(30)  # longer than read_timeout + grace: a wedged device
        return original(timeout)

    transport.read_report = stuck_read  # type: ignore[method-assign]
    session.start()
    assert session.finished.wait(30)
    assert transport.closes == 0  # not closed under the wedged read
    release.set()
    session.join(30)
    assert transport.closes == 1
    assert transport.overlaps == 0
