"""Coalesced ``Error`` reports for one reader, safe to call from any thread.

Wraps the pure ``ErrorCoalescer`` with a lock. Refusals held back by the coalescer are
summarised by a call scheduled on the process's I/O loop (``IoLoop.call_later``): no thread
of its own, and nothing runs while nothing is held back. Without a scheduler (a session
built without a loop, in unit tests) the held-back count rides on the next refusal reported
once the interval allows it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from bridge.intake import Rejection
from bridge.throttle import ErrorCoalescer, ErrorReport

# (report, the refused command's topic or None for a summary, its size, correlation data)
SendReport = Callable[[ErrorReport, str | None, int, bytes | None], None]


class Scheduled(Protocol):
    """What a scheduler returns (``bridge.mqtt.loop.TimerHandle``)."""

    def cancel(self) -> None: ...


# Run a call after a delay, on the scheduler's own thread (``IoLoop.call_later``).
Schedule = Callable[[float, Callable[[], None]], Scheduled]


class RefusalReporter:
    """Reports refused commands through ``send``: a few in full, then summaries.

    Args:
        interval: seconds between reports once the burst is spent.
        burst: reports sent in full before coalescing starts.
        send: publishes and logs one report (called without the lock held).
        summary_topic: the ``topic`` field of summaries.
        schedule: ``IoLoop.call_later``: the summary of held-back refusals is sent from it.
            None: no summary of its own; the next refusal reported says how many it stands for.
    """

    def __init__(self, *, interval: float, burst: int, send: SendReport,
                 summary_topic: str, schedule: Schedule | None = None) -> None:
        self._coalescer = ErrorCoalescer(interval, burst)
        self._interval = interval
        self._send = send
        self._summary_topic = summary_topic
        self._schedule = schedule
        self._lock = threading.Lock()
        self._pending: Scheduled | None = None
        self._closed = False

    def refused(self, rejection: Rejection, *, topic: str, size: int,
                correlation_data: bytes | None = None, command: bytes | None = None) -> None:
        """``command``: the refused payload (its report names it when readable);
        ``correlation_data``: the command's, echoed on its report."""
        with self._lock:
            report = self._coalescer.refused(rejection, topic=topic, size=size,
                                             now=time.monotonic(), command=command)
            if report is None:
                self._arm()
        if report is not None:
            self._send(report, topic, size, correlation_data)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()

    def _arm(self) -> None:  # under the lock
        if self._pending is not None or self._closed or self._schedule is None:
            return
        # Held back now, so the next slot comes within one interval (the throttle's rate).
        self._pending = self._schedule(self._interval, self._flush)

    def _flush(self) -> None:  # on the scheduler's thread
        with self._lock:
            self._pending = None
            if self._closed:
                return
            report = self._coalescer.flush(topic=self._summary_topic, now=time.monotonic())
            if report is None and self._coalescer.pending:
                self._arm()  # the interval has not quite passed: try again
        if report is not None:
            self._send(report, None, 0, None)


__all__ = ["RefusalReporter", "Schedule", "Scheduled"]
