"""Coalesced ``Error`` reports for one reader, safe to call from any thread.

Wraps the pure ``ErrorCoalescer`` with a lock and a one-shot timer: refusals held back by the
coalescer arm the timer, which sends their summary once the interval allows it. No thread runs
while nothing is held back, and no loop has to remember to flush.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bridge.intake import Rejection
from bridge.throttle import ErrorCoalescer, ErrorReport

# (report, the refused command's topic or None for a summary, its size, correlation data)
SendReport = Callable[[ErrorReport, str | None, int, bytes | None], None]


class RefusalReporter:
    """Reports refused commands through ``send``: a few in full, then summaries.

    Args:
        interval: seconds between reports once the burst is spent.
        burst: reports sent in full before coalescing starts.
        send: publishes and logs one report (called without the lock held).
        summary_topic: the ``topic`` field of summaries.
    """

    def __init__(self, *, interval: float, burst: int, send: SendReport,
                 summary_topic: str) -> None:
        self._coalescer = ErrorCoalescer(interval, burst)
        self._interval = interval
        self._send = send
        self._summary_topic = summary_topic
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False

    def refused(self, rejection: Rejection, *, topic: str, size: int,
                correlation_data: bytes | None = None) -> None:
        with self._lock:
            report = self._coalescer.refused(rejection, topic=topic, size=size,
                                             now=time.monotonic())
            if report is None:
                self._arm()
        if report is not None:
            self._send(report, topic, size, correlation_data)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _arm(self) -> None:  # under the lock
        if self._timer is not None or self._closed:
            return
        timer = threading.Timer(self._interval, self._flush)
        timer.name = "refusal-summary"
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            report = self._coalescer.flush(topic=self._summary_topic, now=time.monotonic())
            if report is None and self._coalescer.pending:
                self._arm()  # the interval has not quite passed: try again
        if report is not None:
            self._send(report, None, 0, None)


__all__ = ["RefusalReporter"]
