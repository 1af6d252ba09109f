"""Blocking HID writes of every reader, on one writer thread (``hid-write``) off the I/O loop.

A HID write blocks until the device takes the report, and a wedged device may never take it:
that must stall neither the I/O loop nor the other readers. Writes are rare and short (one
command at a time per reader, a few reports each), so one thread serves every reader; a
thread per reader would sit idle nearly all the time.

When a job has made no progress (no report taken) for ``stall_after`` seconds while other
jobs wait behind it, the writer gives up on that thread: a fresh ``hid-write`` thread takes
the waiting jobs, and the stuck one ends by itself once its write returns (a thread blocked in
a C call cannot be cancelled). The reader whose write is stuck is the watchdog's business
(its session's ``writer_busy_since``); only one thread is ever abandoned per wedged write, and
only when someone else is actually waiting.

The stall check is a timer on the I/O loop, armed only while a job waits behind a busy thread:
an idle writer costs nothing, and nothing polls.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import structlog

from bridge.mqtt.loop import IoLoop, TimerHandle

_log = structlog.get_logger("bridge.hid_writer")

# No report taken for this long while other readers wait: they move to a fresh thread. A
# report normally takes about a millisecond (one USB interrupt interval).
STALL_AFTER: Final = 0.25

Progress = Callable[[], None]
"""Called by a job before each report it writes (the stall check measures from the last)."""
WriteJob = Callable[[Progress], None]


class _Worker:
    """One writer thread and what it is doing now."""

    __slots__ = ("abandoned", "busy_since", "thread")

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.busy_since: float | None = None  # last progress of the current job; None: idle
        self.abandoned = False


class HidWriter:
    """Runs write jobs for every reader, in submission order, off the I/O loop.

    Args:
        loop: the I/O loop that runs the stall check.
        stall_after: seconds without progress after which waiting jobs move to a new thread.
        name: the writer threads' name.
    """

    def __init__(self, loop: IoLoop, *, stall_after: float = STALL_AFTER,
                 name: str = "hid-write") -> None:
        self._loop = loop
        self._stall_after = stall_after
        self._name = name
        self._jobs: deque[WriteJob] = deque()
        self._cond = threading.Condition()
        self._worker: _Worker | None = None
        self._watch: TimerHandle | None = None
        self._stopped = False
        self.abandoned_threads = 0  # how many stuck threads were left behind (tests, logs)

    def submit(self, job: WriteJob) -> bool:
        """Queue ``job`` to run on a writer thread (from any thread); False once stopped."""
        with self._cond:
            if self._stopped:
                return False
            self._jobs.append(job)
            worker = self._worker
            if worker is None:
                worker = self._worker = self._spawn()
            elif (busy_since := worker.busy_since) is not None:
                # A write already stuck for a while hands over sooner.
                self._arm_watch(max(0.0, busy_since + self._stall_after - time.monotonic()))
            self._cond.notify_all()
        return True

    def stop(self) -> None:
        """Drop waiting jobs and end the threads (a thread inside a write ends after it)."""
        with self._cond:
            self._stopped = True
            self._jobs.clear()
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None
            self._cond.notify_all()

    @property
    def threads(self) -> list[threading.Thread]:
        with self._cond:
            worker = self._worker
        return [worker.thread] if worker is not None and worker.thread is not None else []

    # -- writer threads ------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        worker = _Worker()
        worker.thread = threading.Thread(target=self._run, args=(worker,), name=self._name,
                                         daemon=True)
        worker.thread.start()
        return worker

    def _run(self, worker: _Worker) -> None:
        def progress() -> None:
            worker.busy_since = time.monotonic()

        while True:
            with self._cond:
                while not self._jobs and not worker.abandoned and not self._stopped:
                    self._cond.wait()
                if worker.abandoned or self._stopped:
                    return
                job = self._jobs.popleft()
                worker.busy_since = time.monotonic()
                if self._jobs:
                    self._arm_watch(self._stall_after)
            try:
                job(progress)
            except Exception:  # a job's bug must not end the writer for every reader
                _log.exception("hid_write_job_failed")
            finally:
                with self._cond:
                    worker.busy_since = None

    # -- the stall check (I/O loop) ------------------------------------------------------------

    def _arm_watch(self, delay: float) -> None:
        # Under ``_cond``. One timer at a time; it re-arms itself while jobs keep waiting.
        if self._watch is None and not self._stopped:
            self._watch = self._loop.call_later(delay, self._check_stall)

    def _check_stall(self) -> None:
        with self._cond:
            self._watch = None
            worker = self._worker
            if worker is None or not self._jobs or self._stopped:
                return
            busy_since = worker.busy_since
            if busy_since is None:
                return  # it is between jobs and takes the next one at once
            stalled_for = time.monotonic() - busy_since
            if stalled_for < self._stall_after:
                self._arm_watch(self._stall_after - stalled_for)
                return
            worker.abandoned = True
            self.abandoned_threads += 1
            self._worker = self._spawn()
            waiting = len(self._jobs)
            self._cond.notify_all()
        _log.warning("hid_write_stalled", stalled_s=round(stalled_for, 3), waiting=waiting)


__all__ = ["STALL_AFTER", "HidWriter", "Progress", "WriteJob"]
