"""An open reader's transport, shared by its read thread and the HID writer.

hidapi frees the device in ``hid_close``: closing while another thread is inside
``hid_read_timeout`` or ``hid_write`` is a use-after-free. So the handle counts its users (the
read thread for its whole life, each write in progress) and is closed by whichever comes last
once closing was asked for, never under a read or a write, and without waiting for a read or a
write that a wedged device never returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bridge.errors import TransportError
from bridge.hid_writer import HidWriter, Progress
from bridge.metrics import Metrics
from bridge.mms import packetize
from bridge.transport import Transport


class ReaderHandle:
    """Counts the users of one transport and writes whole messages to it."""

    def __init__(self, transport: Transport, metrics: Metrics) -> None:
        self.transport = transport
        self._metrics = metrics
        self._lock = threading.Lock()
        self._users = 0
        self._close_requested = False
        # When the report being written was handed to the device; None when no write is in
        # progress (the watchdog's view of a write that does not return).
        self.busy_since: float | None = None

    def enter(self) -> bool:
        """Become a user; False once closing was asked for (do not touch the handle)."""
        with self._lock:
            if self._close_requested:
                return False
            self._users += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            close = self._close_requested and self._users == 0
        if close:
            self.transport.close()

    def close_when_idle(self) -> None:
        """Close now if no one is inside, else when the last user leaves."""
        with self._lock:
            self._close_requested = True
            self._users += 1
        self.leave()

    def write_message(self, data: bytes, progress: Progress) -> None:
        """Write one whole message, report by report (the caller is already a user)."""
        reports = packetize(data, self.transport.report_len)
        try:
            for report in reports:
                progress()
                self.busy_since = time.monotonic()
                self.transport.write_report(report)
        finally:
            self.busy_since = None
        self._metrics.report_out(len(reports))

    def write_on(self, writer: HidWriter, data: bytes,
                 done: Callable[[Exception | None], None]) -> None:
        """Write ``data`` on the writer's thread; ``done`` gets the error, if any (that
        thread)."""
        def job(progress: Progress) -> None:
            if not self.enter():
                done(TransportError("the reader is closing"))
                return
            error: Exception | None = None
            try:
                self.write_message(data, progress)
            except TransportError as exc:
                error = exc
            finally:
                self.leave()
            done(error)

        if not writer.submit(job):
            done(TransportError("the bridge is stopping"))


__all__ = ["ReaderHandle"]
