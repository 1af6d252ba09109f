"""Hot-plug: finds readers, opens a session for each, reopens them when they come back.

One named thread (``reader-scan``) enumerates the backend every ``scan_interval`` seconds.
A reader whose session ended (unplug, failure) is forgotten, so the next scan that sees it
again opens a fresh session; failures to open wait a backoff delay per path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

import structlog

from bridge.backoff import Backoff
from bridge.courier import Courier
from bridge.errors import TransportError
from bridge.hid_writer import HidWriter
from bridge.metrics import Metrics
from bridge.mqtt.link import LinkOptions
from bridge.mqtt.loop import default_loop
from bridge.session import ReaderObserver, ReaderSession, SessionOptions
from bridge.transport import MMS_PRODUCT_IDS, Backend, DeviceInfo

_log = structlog.get_logger("bridge.supervisor")

SESSION_STOP_TIMEOUT: Final = 5.0
_OPEN_RETRY_MIN: Final = 1.0
_OPEN_RETRY_MAX: Final = 30.0


class Supervisor:
    """Owns every ``ReaderSession`` of one bridge process.

    Args:
        backend: where readers are found (hidapi or the simulator bus).
        options: per-reader behaviour.
        link_options: broker connection for every reader session.
        metrics: shared collectors.
        courier: every reader's outbox; outlives sessions, so a replug loses nothing.
        boot_id: random per bridge start; tagged on every published message (MQTT v5).
        scan_interval: seconds between enumerations (hot-plug latency).
        on_change: called after a reader connects or disconnects (bridge Info refresh).
        observers: follow every reader's connect, messages and disconnect (WebSocket endpoint).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        options: SessionOptions,
        link_options: LinkOptions,
        metrics: Metrics,
        courier: Courier,
        boot_id: str,
        scan_interval: float = 1.0,
        on_change: Callable[[], None] | None = None,
        observers: tuple[ReaderObserver, ...] = (),
    ) -> None:
        self._backend = backend
        self._options = options
        self._link_options = link_options
        self._metrics = metrics
        self.courier = courier
        self._boot_id = boot_id
        self._scan_interval = scan_interval
        self._on_change = on_change
        self._observers = observers
        # Every reader's HID writes, on one thread (``hid-write``) beside the read threads.
        self.writer = HidWriter(courier.loop if courier.loop is not None else default_loop())
        self._sessions: dict[str, ReaderSession] = {}
        self._retry_at: dict[str, tuple[float, Backoff]] = {}
        self._seq: dict[str, int] = {}
        self._seen_serials: set[str] = set()
        self._known_roots: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.heartbeat = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.scan_once()
        self._thread = threading.Thread(target=self._scan_loop, name="reader-scan", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = SESSION_STOP_TIMEOUT) -> None:
        """Stop scanning, then end every session (each publishes ``disconnected``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.stop()
        deadline = time.monotonic() + timeout
        for session in sessions:
            session.finished.wait(max(0.0, deadline - time.monotonic()))
            session.join(max(0.0, deadline - time.monotonic()))
        self.writer.stop()
        self._metrics.readers_open.set(0)

    def sessions(self) -> list[ReaderSession]:
        with self._lock:
            return list(self._sessions.values())

    def session_for_root(self, root: str) -> ReaderSession | None:
        """The live, identified session publishing under ``root`` (no trailing slash)."""
        for session in self.sessions():
            if session.alive and session.topics is not None and session.topics.root == root:
                return session
        return None

    def known_root(self, root: str) -> bool:
        """Has a reader of ours published under ``root`` since this bridge started?"""
        with self._lock:
            return root in self._known_roots

    def connected_roots(self) -> list[str]:
        return sorted(
            s.topics.root for s in self.sessions() if s.alive and s.topics is not None
        )

    # -- scanning -----------------------------------------------------------------------------

    def _scan_loop(self) -> None:
        while not self._stop.wait(self._scan_interval):
            self.heartbeat = time.monotonic()
            self.scan_once()

    def scan_once(self) -> None:
        """Reap finished sessions, then open a session for every new MMS reader."""
        self._reap()
        try:
            found = self._backend.enumerate()
        except TransportError as exc:
            _log.warning("reader_enumeration_failed", error=str(exc))
            return
        now = time.monotonic()
        for info in found:
            if info.product_id not in MMS_PRODUCT_IDS:
                continue
            with self._lock:
                if info.path in self._sessions or self._stop.is_set():
                    continue
            retry = self._retry_at.get(info.path)
            if retry is not None and now < retry[0]:
                continue
            self._open(info)

    def _open(self, info: DeviceInfo) -> None:
        try:
            transport = self._backend.open(info)
        except TransportError as exc:
            self._schedule_retry(info.path, str(exc))
            return
        session = ReaderSession(
            transport,
            options=self._options,
            link_options=self._link_options,
            metrics=self._metrics,
            courier=self.courier,
            boot_id=self._boot_id,
            next_seq=self._next_seq,
            on_identified=self._identified,
            before_connect=self._wait_for_predecessor,
            observers=self._observers,
            writer=self.writer,
        )
        with self._lock:
            self._sessions[info.path] = session
        _log.info("reader_found", path=info.path, product=info.product,
                  product_id=f"0x{info.product_id:04X}")
        session.start()

    def _schedule_retry(self, path: str, error: str) -> None:
        _, backoff = self._retry_at.get(path, (0.0, Backoff(_OPEN_RETRY_MIN, _OPEN_RETRY_MAX)))
        delay = backoff.next_delay()
        self._retry_at[path] = (time.monotonic() + delay, backoff)
        self._metrics.reader_open_failures.labels("open").inc()
        _log.warning("reader_open_failed", path=path, error=error, retry_in_s=round(delay, 2))

    def _reap(self) -> None:
        changed = False
        with self._lock:
            for path, session in list(self._sessions.items()):
                if session.finished.is_set():
                    del self._sessions[path]
                    changed = True
                    if session.identity is None and not session.gone.is_set():
                        self._schedule_retry(path, session.failure or "identification failed")
                    else:
                        self._retry_at.pop(path, None)
            self._metrics.readers_open.set(len(self._sessions))
        if changed and self._on_change is not None:
            self._on_change()

    def _wait_for_predecessor(self, session: ReaderSession) -> None:
        """A reader replugged under a new path: let its old session finish first. Both would
        use the same MQTT client id, and the old one's retained ``disconnected`` could land
        after the new ``connected``."""
        assert session.identity is not None
        serial = session.identity.serial
        deadline = time.monotonic() + SESSION_STOP_TIMEOUT
        for other in self.sessions():
            if other is session or other.identity is None or other.identity.serial != serial:
                continue
            other.finished.wait(max(0.0, deadline - time.monotonic()))

    def _identified(self, session: ReaderSession) -> None:
        assert session.identity is not None
        serial = session.identity.serial
        with self._lock:
            if serial in self._seen_serials:
                self._metrics.reader_reconnects.labels(serial).inc()
            self._seen_serials.add(serial)
            if session.topics is not None:
                self._known_roots.add(session.topics.root)
        self._retry_at.pop(session.info.path, None)
        if self._on_change is not None:
            self._on_change()

    def _next_seq(self, serial: str) -> int:
        # Per reader and increasing across replugs within one boot (consumers dedupe on
        # (boot_id, seq) after a QoS 1 redelivery).
        with self._lock:
            value = self._seq.get(serial, 0) + 1
            self._seq[serial] = value
            return value


__all__ = ["Supervisor"]
