"""The I/O loop: one thread drives every MQTT connection of the process.

Reader threads only read; everything that touches an MQTT connection, an outbox or the spool
runs here, so none of it needs a lock. Each connection (``bridge.mqtt.wire``) is a
non-blocking socket in one ``selectors`` selector; other threads hand work over with
``call_soon``, which wakes the selector through an eventfd (a socket pair where there is
none; one wake-up per turn, not per item). Each turn: network events,
hand-overs, the turn hooks (the courier fills its windows), then every connection writes what
is due, and only then the loop sleeps.

Connecting is the one blocking step (TCP connect, TLS handshake): it runs on a small
connector thread, and the open socket is handed back to the loop.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

import structlog

_log = structlog.get_logger("bridge.mqtt.loop")

# The longest sleep: keepalive checks and the heartbeat need a turn a second.
MAX_SLEEP: Final = 1.0


class Driven(Protocol):
    """A connection the loop drives (``MqttLink``)."""

    def service(self, now: float) -> float | None:
        """Keepalive, reconnect timers, pending writes; the next time it needs a turn."""
        ...


class TimerHandle:
    """A call scheduled with ``IoLoop.call_later``; ``cancel()`` from any thread."""

    __slots__ = ("call", "cancelled", "when")

    def __init__(self, when: float, call: Callable[[], None]) -> None:
        self.when = when
        self.call = call
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class IoLoop:
    """One thread, one selector, every connection."""

    def __init__(self, name: str = "mqtt-io") -> None:
        self.name = name
        self._selector = selectors.DefaultSelector()
        self._watched: set[object] = set()  # sockets registered through ``register``
        # The wake-up pair exists while the loop runs (a loop never started holds no sockets).
        self._waker: _Waker | None = None
        self._calls: deque[Callable[[], None]] = deque()
        self._timers: list[tuple[float, int, TimerHandle]] = []  # a heap; the loop's thread only
        self._timer_order = itertools.count()
        self._signalled = False
        self._driven: list[Driven] = []
        self._hooks: list[Callable[[], float | None]] = []
        self._thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None  # kept after stop(): in_loop()
        self._stop = False
        self._lock = threading.Lock()  # start/stop only
        self.heartbeat = time.monotonic()
        self.turns = 0
        self._connector = _Connector(self)

    # -- any thread ------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._waker = _Waker()
            self._selector.register(self._waker.fileno(), selectors.EVENT_READ, None)
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._loop_thread = self._thread
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop = True
        self.wake()
        thread.join(timeout)
        self._connector.stop()
        if not thread.is_alive():
            self._selector.close()
            if self._waker is not None:
                self._waker.close()

    @property
    def stopped(self) -> bool:
        return self._stop

    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def in_loop(self) -> bool:
        return threading.current_thread() is self._loop_thread

    def call_soon(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the loop's thread, in order with other hand-overs."""
        self._calls.append(call)
        self.wake()

    def call_in_loop(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the loop's thread: now if already there, else handed over."""
        if self.in_loop():
            call()
        else:
            self.call_soon(call)

    def call_later(self, delay: float, call: Callable[[], None]) -> TimerHandle:
        """Run ``call`` on the loop's thread after ``delay`` seconds (from any thread)."""
        handle = TimerHandle(time.monotonic() + max(0.0, delay), call)
        self.call_in_loop(lambda: self._schedule(handle))
        return handle

    def _schedule(self, handle: TimerHandle) -> None:
        heapq.heappush(self._timers, (handle.when, next(self._timer_order), handle))

    def wake(self) -> None:
        if self._signalled:
            return  # a wake-up is already on its way; the loop clears this before draining
        self._signalled = True
        waker = self._waker
        if waker is not None:
            waker.wake()

    def connect_in_background(self, attempt: Callable[[], None]) -> None:
        """Run a blocking connect on the connector thread."""
        self._connector.submit(attempt)

    @property
    def connector_busy_since(self) -> float | None:
        return self._connector.busy_since

    # -- the loop's thread -----------------------------------------------------------------

    def add(self, driven: Driven) -> None:
        if driven not in self._driven:
            self._driven.append(driven)

    def remove(self, driven: Driven) -> None:
        with contextlib.suppress(ValueError):
            self._driven.remove(driven)

    def add_hook(self, hook: Callable[[], float | None]) -> None:
        """Called on every turn (the courier's pump), returns when it next needs a turn (or
        None); may be added from any thread."""
        self.call_soon(lambda: self._hooks.append(hook))

    def remove_hook(self, hook: Callable[[], float | None]) -> None:
        def drop() -> None:
            with contextlib.suppress(ValueError):
                self._hooks.remove(hook)
        self.call_soon(drop)

    def register(self, sock: object, events: int, handler: Callable[[int], None]) -> None:
        # Known sockets are looked up in our own set: the selector's "not registered"
        # KeyError formats the socket's repr, two system calls each time.
        if sock in self._watched:
            self._selector.modify(sock, events, handler)  # type: ignore[arg-type]
        else:
            self._selector.register(sock, events, handler)  # type: ignore[arg-type]
            self._watched.add(sock)

    def unregister(self, sock: object) -> None:
        if sock in self._watched:
            self._watched.discard(sock)
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)  # type: ignore[arg-type]

    def _run(self) -> None:
        timeout: float | None = 0.0
        while not self._stop:
            try:
                events = self._selector.select(timeout)
                for key, mask in events:
                    if key.data is None:
                        self._waker.clear()  # type: ignore[union-attr]
                    else:
                        key.data(mask)
                timeout = self._turn()
            except Exception:  # a bug must not stop every reader's delivery
                _log.exception("io_loop_failed")
                timeout = 0.1

    def _turn(self) -> float | None:
        self.heartbeat = now = time.monotonic()
        self.turns += 1
        self._signalled = False  # before draining: a hand-over after this wakes us again
        while self._calls:
            call = self._calls.popleft()
            try:
                call()
            except Exception:
                _log.exception("io_loop_call_failed")
        deadline = now + MAX_SLEEP
        timers = self._timers
        while timers and (timers[0][2].cancelled or timers[0][0] <= now):
            _, _, handle = heapq.heappop(timers)
            if handle.cancelled:
                continue
            try:
                handle.call()
            except Exception:
                _log.exception("io_loop_timer_failed")
        if timers:
            deadline = min(deadline, timers[0][0])
        for hook in list(self._hooks):
            try:
                due = hook()
            except Exception:
                _log.exception("io_loop_hook_failed")
                continue
            if due is not None:
                deadline = min(deadline, due)
        for driven in list(self._driven):
            try:
                due = driven.service(now)
            except Exception:
                _log.exception("io_loop_service_failed")
                continue
            if due is not None:
                deadline = min(deadline, due)
        if self._calls:
            return 0.0
        return max(0.0, deadline - time.monotonic())


class _Waker:
    """Wakes the selector from another thread: an eventfd on Linux (one counter, cheaper to
    signal than a socket), a socket pair elsewhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a wake-up never writes to a descriptor closed (reused)
        self._fd: int | None = None
        self._pair: tuple[socket.socket, socket.socket] | None = None
        if hasattr(os, "eventfd"):
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:
            pair = socket.socketpair()
            for sock in pair:
                sock.setblocking(False)
            self._pair = pair

    def fileno(self) -> int:
        return self._fd if self._fd is not None else self._pair[0].fileno()  # type: ignore[index]

    def wake(self) -> None:
        with self._lock, contextlib.suppress(BlockingIOError, OSError):
            if self._fd is not None:
                os.eventfd_write(self._fd, 1)
            elif self._pair is not None:
                self._pair[1].send(b"\0")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            if self._fd is not None:
                os.eventfd_read(self._fd)
            elif self._pair is not None:
                self._pair[0].recv(4096)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            for sock in self._pair or ():
                sock.close()


class _Connector:
    """The blocking half of connecting (TCP, TLS handshake), off the loop's thread.

    Its thread (``mqtt-connect``) exists only while attempts are queued: connecting happens at
    start and after a lost connection, so a thread waiting for the next attempt would sit idle
    for the bridge's whole life (issue 18: threads are one per reader plus a small constant).
    """

    def __init__(self, loop: IoLoop) -> None:
        self._loop = loop
        self._attempts: deque[Callable[[], None]] = deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.busy_since: float | None = None

    def submit(self, attempt: Callable[[], None]) -> None:
        with self._lock:
            self._attempts.append(attempt)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mqtt-connect",
                                                daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._attempts:
                    self._thread = None  # the next submit starts a fresh thread
                    return
                attempt = self._attempts.popleft()
            self.busy_since = time.monotonic()
            try:
                attempt()
            except Exception:
                _log.exception("mqtt_connect_attempt_failed")
            finally:
                self.busy_since = None


_default: IoLoop | None = None
_default_lock = threading.Lock()


def default_loop() -> IoLoop:
    """The process's I/O loop, started on first use."""
    global _default  # noqa: PLW0603 - one loop per process, created lazily
    with _default_lock:
        if _default is None or _default.stopped:
            _default = IoLoop(name="mqtt-io-shared")
        _default.start()
        return _default


__all__ = ["MAX_SLEEP", "Driven", "IoLoop", "TimerHandle", "default_loop"]
