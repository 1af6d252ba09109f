"""The transport-facing half of a simulated reader: HID reports in and out, and time.

The host side calls ``handle_host_report`` and ``next_device_report``; whole messages from
the host go to ``_handle_message``, which the device (``bridge.simulator.reader``) supplies.
Timed behaviour (card presented, transaction timeout, reset re-enumeration, buzzer done)
sits on a time-ordered heap that is processed whenever the reader is touched, so no thread
per reader is needed. Device reports wait in a bounded queue, released at USB full speed
when ``paced``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from bridge.errors import DeviceGoneError
from bridge.mms import MessageReceived, Reassembler, packetize
from bridge.simulator.cards import notification

REPORT_INTERVAL: Final = 0.001  # USB full speed: one 64-byte report per 1 ms frame (§2)
MAX_QUEUED_REPORTS: Final = 1 << 16  # ~4 MB of reports; a real device would stall instead


class ReportQueue:
    """Reports in and out of one simulated reader, its timers and its plug state; one lock
    (``_cond``, reentrant) guards all of it and the device state of the subclass."""

    def __init__(self, serial: str, *, paced: bool, report_len: int,
                 stream_rate: float) -> None:
        self.serial = serial.upper()
        self.paced = paced
        self.report_len = report_len
        self.plugged = True
        self.generation = 0  # bumped on every replug: old transports stay dead
        self.dropped_reports = 0
        self._reassembler = Reassembler(report_len=report_len)
        self._out: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._next_slot = 0.0
        # Benchmarks: a steady stream of single-report notifications, this many per second.
        self.stream_rate = stream_rate
        self._stream_next = 0.0
        self._stream_count = 0

    # -- host side --------------------------------------------------------------------------

    def handle_host_report(self, report: bytes, generation: int | None = None) -> None:
        """One report written by the host. Raises DeviceGoneError while unplugged."""
        with self._cond:
            self._check_present(generation)
            self._run_timers()
            for event in self._reassembler.feed(report):
                if isinstance(event, MessageReceived):
                    self._handle_message(event.message)

    def next_device_report(self, timeout: float, generation: int | None = None) -> bytes | None:
        """The next report for the host, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._check_present(generation)
                now = self._run_timers()
                wake = deadline
                if self.stream_rate > 0:
                    wake = min(wake, self._stream(now))
                if self._out:
                    if not self.paced or now >= self._next_slot:
                        self._next_slot = max(now, self._next_slot) + REPORT_INTERVAL
                        report = self._out.popleft()
                        self._cond.notify_all()
                        return report
                    wake = min(wake, self._next_slot)
                if self._timers:
                    wake = min(wake, self._timers[0][0])
                if now >= deadline:
                    return None
                self._cond.wait(max(0.0, wake - now))

    def poll(self) -> None:
        """Run due timers (the bus calls this when it enumerates)."""
        with self._cond:
            self._run_timers()

    # -- test and scenario controls ---------------------------------------------------------

    def emit_message(self, message: bytes) -> None:
        """Queue a whole device message, packetized (multi-report when long)."""
        with self._cond:
            self._queue(message)

    def emit_raw_report(self, report: bytes) -> None:
        """Queue one report as is (fault injection)."""
        with self._cond:
            self._out.append(bytes(report))
            self._cond.notify_all()

    def unplug(self) -> None:
        with self._cond:
            self.plugged = False
            self._out.clear()
            self._reassembler.reset()
            self._cond.notify_all()

    def replug(self, power_up_notification: bool = False) -> None:
        with self._cond:
            self.plugged = True
            self.generation += 1
            self._next_slot = 0.0
            if power_up_notification:
                self._queue(notification(0x1001, "00000000",
                                         payload=bytes.fromhex("810102820100")))
            self._cond.notify_all()

    # -- internals (caller holds the lock) --------------------------------------------------

    def _check_present(self, generation: int | None) -> None:
        if not self.plugged or (generation is not None and generation != self.generation):
            raise DeviceGoneError(f"simulated reader {self.serial} is unplugged")

    def _queue(self, message: bytes) -> None:
        reports = packetize(message, self.report_len)
        if len(self._out) + len(reports) > MAX_QUEUED_REPORTS:
            self.dropped_reports += len(reports)
            return
        self._out.extend(reports)
        self._cond.notify_all()

    def _stream(self, now: float) -> float:
        """Queue the stream messages that are due; returns when the next one is."""
        if self._stream_next == 0.0:
            self._stream_next = now
        while now >= self._stream_next and len(self._out) < MAX_QUEUED_REPORTS:
            self._stream_count += 1
            self._queue(notification(0x1001, f"{self._stream_count & 0xFFFFFFFF:08X}"))
            self._stream_next += 1.0 / self.stream_rate
        return self._stream_next

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), action))
        self._cond.notify_all()

    def _run_timers(self) -> float:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, action = heapq.heappop(self._timers)
            action()
        return now

    def _handle_message(self, data: bytes) -> None:
        """One whole message from the host (lock held): what the device does with it."""
        raise NotImplementedError


__all__ = ["MAX_QUEUED_REPORTS", "REPORT_INTERVAL", "ReportQueue"]
