"""SIGTERM/SIGINT handling that cannot hang the process.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds a lock (the log writer's, an ``Event``'s). Anything in the handler that takes a
lock can then deadlock the process, and did (issue 16: a second signal arriving while a log
line was being written). So the handler only appends to a list; the interpreter's C-level
handler also writes the signal number to a socket (``signal.set_wakeup_fd``), and an ordinary
thread reads it and does the rest: log, ask for a clean stop, and force the exit when a second
signal comes or the clean stop overruns its deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Final

import structlog

_log = structlog.get_logger("bridge.signals")

# After a second signal the clean stop gets this long, then the process exits anyway.
FORCE_GRACE: Final = 2.0
# A clean stop that takes longer than this (one signal only) is cut short.
STOP_DEADLINE: Final = 30.0
EXIT_FORCED: Final = 1
SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(
    stop: threading.Event,
    *,
    grace: float = FORCE_GRACE,
    deadline: float = STOP_DEADLINE,
    force_exit: Callable[[int], object] = os._exit,
) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop``; after a second one the process exits within ``grace``
    seconds, after the first within ``deadline``, however far the clean stop got (the timers
    are daemon threads: a process that ends first never sees them). Main thread only; the
    previous handlers are restored on the way out."""
    receive, send = socket.socketpair()
    send.setblocking(False)

    def record(signum: int, frame: FrameType | None) -> None:
        # The record is the byte the interpreter already wrote to the wakeup socket. Nothing
        # here: no lock, no log line, no exception (a handler replaces the default action).
        return

    previous_fd = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, record) for sig in SIGNALS}
    watcher = _Watcher(receive, stop, grace=grace, deadline=deadline, force_exit=force_exit)
    watcher.start()
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(previous_fd)
        send.close()  # the watcher's read returns empty and it ends
        watcher.join(1.0)
        receive.close()


class _Watcher(threading.Thread):
    def __init__(self, receive: socket.socket, stop: threading.Event, *, grace: float,
                 deadline: float,
                 force_exit: Callable[[int], object]) -> None:
        super().__init__(name="signals", daemon=True)
        self._receive = receive
        self._stop_event = stop
        self._grace = grace
        self._deadline = deadline
        self._force_exit = force_exit
        self._count = 0

    def run(self) -> None:
        while True:
            try:
                data = self._receive.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                self._received(signum)

    def _received(self, signum: int) -> None:
        if signum not in SIGNALS:
            return
        self._count += 1
        name = signal.Signals(signum).name
        if self._count == 1:
            _log.info("signal_received", signal=name)
            self._stop_event.set()
            self._force_after(self._deadline, "clean stop overran its deadline")
        elif self._count == 2:
            _log.warning("signal_received_again", signal=name, exit_within=self._grace)
            self._stop_event.set()
            self._force_after(self._grace, "second signal")

    def _force_after(self, seconds: float, why: str) -> None:
        def wait_then_exit() -> None:
            threading.Event().wait(seconds)
            _log.error("forced_exit", reason=why, after=seconds)
            self._force_exit(EXIT_FORCED)

        threading.Thread(target=wait_then_exit, name="signals-force", daemon=True).start()


__all__ = ["EXIT_FORCED", "FORCE_GRACE", "STOP_DEADLINE", "stop_on_signals"]
