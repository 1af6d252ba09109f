"""How a reader session starts and ends: its threads, and an end that happens exactly once.

``SessionLifecycle`` is the base of ``bridge.session.ReaderSession``, which supplies the work
(``_serve``: open, identify, connect, read) and the teardown of its parts (``_close``). The
base owns the read thread ``hid-read[<path>]`` (strongly referenced here), the events others
watch (``stopping``, ``gone``, ``finished``), why the session ended (``failure``) and the
reader's ``ReaderHandle``.

The transport is closed by whichever of its users (the read thread, a write in progress, the
session's shutdown) comes last: hidapi frees the device in ``hid_close``, so closing under a
read or a write is a use-after-free. A read or write that never returns must not keep the
session from ending either: a loop timer then ends it on a short-lived ``reader-stop`` thread
(``_rescue``), and the stuck thread closes the handle when it comes back.
"""

from __future__ import annotations

import abc
import threading
import time
from typing import Final

import structlog

from bridge.metrics import Metrics
from bridge.mqtt.loop import IoLoop, TimerHandle
from bridge.reader_handle import ReaderHandle
from bridge.transport import Transport

READ_EXIT_GRACE: Final = 2.0  # seconds beyond ``read_timeout`` before a stuck thread is left


class SessionLifecycle(abc.ABC):
    """Starts a reader session's read thread and ends the session once, by whoever is first.

    Args:
        transport: the reader's transport (shared through the session's ``ReaderHandle``).
        metrics: shared collectors.
        loop: the I/O loop, whose timer ends a session stuck in the device.
        read_timeout: the longest a read waits (the read thread notices a stop within it).
        log: the session's bound logger.
    """

    def __init__(
        self,
        transport: Transport,
        metrics: Metrics,
        *,
        loop: IoLoop,
        read_timeout: float,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._path = transport.info.path
        self._loop = loop
        self._read_timeout = read_timeout
        self._log = log
        self.stopping = threading.Event()
        self.gone = threading.Event()
        self.finished = threading.Event()
        self.failure: str | None = None
        self._threads: list[threading.Thread] = []
        self._handle = ReaderHandle(transport, metrics)  # closed by its last user
        self._shutdown_lock = threading.Lock()
        self._shutdown_claimed = False
        self._rescue_timer: TimerHandle | None = None

    @abc.abstractmethod
    def _serve(self) -> None:
        """The read thread's work, until the reader goes away or the session stops."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Tear down the session's parts (once, by whoever ends the session)."""

    @abc.abstractmethod
    def _reset_reassembler(self) -> None:
        """Drop the message the read thread was reassembling (the read thread's)."""

    def start(self) -> None:
        self._handle.enter()  # the read thread, from before it starts (it opens the handle)
        thread = threading.Thread(target=self._run, name=f"hid-read[{self._path}]",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Ask the session to end; ``finished`` is set once it has cleaned up."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        # The read thread notices within ``read_timeout``; if a wedged device keeps it inside
        # a read or a write, the loop ends the session without it.
        self._rescue_timer = self._loop.call_later(
            self._read_timeout + READ_EXIT_GRACE, self._rescue)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        return not self.finished.is_set()

    @property
    def writer_busy_since(self) -> float | None:
        """When the report being written to this reader was handed to the device (None: no
        write in progress). Longer than ``writer_limit`` means a write that does not return."""
        return self._handle.busy_since

    def _run(self) -> None:
        """The read thread: the session's work, then its end (unless the rescue ended it)."""
        try:
            self._serve()
        finally:
            if self._claim_shutdown():
                self._shutdown()
            else:  # the rescue ended the session while this thread was stuck in the device
                self._reset_reassembler()
            self._handle.leave()

    def _fail(self, failure: str) -> bool:
        """Record why the session ends; False when the rescue already gave a reason."""
        if self.failure is not None:
            return False
        self.failure = failure
        return True

    def _rescue(self) -> None:
        """The loop: end the session for a read thread stuck in the device (it blocks on the
        link and the courier, so on a short-lived thread of its own, never the loop's)."""
        if not self._claim_shutdown():
            return
        self._log.warning("reader_read_slow_to_stop")
        thread = threading.Thread(target=self._shutdown, name=f"reader-stop[{self._path}]",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _claim_shutdown(self) -> bool:
        with self._shutdown_lock:
            claimed, self._shutdown_claimed = self._shutdown_claimed, True
        return not claimed

    def _shutdown(self) -> None:
        self.stopping.set()
        if self._rescue_timer is not None:
            self._rescue_timer.cancel()
        self._close()
        self.finished.set()


__all__ = ["READ_EXIT_GRACE", "SessionLifecycle"]
