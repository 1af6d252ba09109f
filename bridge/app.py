"""The bridge process: wiring, start-up, and a staged, time-boxed shutdown.

Start: bridge-level MQTT session (``MagTek/Bridge/<host id>/Status`` = ``online``, will
``offline``) and the reader supervisor, independently: readers are opened and identified even
while the broker is unreachable (a store Pi often boots before its network).

Stop (SIGTERM/SIGINT only set an event): stop scanning -> each reader publishes retained
``disconnected`` and disconnects cleanly -> readers closed -> bridge ``offline`` -> exit 0.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Final

import structlog

from bridge import __version__
from bridge.config import Settings
from bridge.courier import Courier, CourierOptions
from bridge.http import OpsServer
from bridge.intake import Rejection, rejection_report
from bridge.metrics import Metrics
from bridge.mqtt.link import InboundMessage, LinkOptions, MqttLink, Publication, TlsOptions
from bridge.mqtt.loop import IoLoop
from bridge.mqtt.topics import BridgeTopics, ReaderTopics, parse_send_command_topic
from bridge.outbox import OutboxLimits
from bridge.sdnotify import SystemdNotifier, watchdog_interval
from bridge.session import SessionOptions
from bridge.spool import Spool
from bridge.supervisor import Supervisor
from bridge.transport import Backend, get_backend
from bridge.websocket import WebSocketEndpoint

if TYPE_CHECKING:
    from bridge.mppg.service import PaymentRequestService

_log = structlog.get_logger("bridge.app")

# A loop that has not turned for this long is stuck (read loops turn every read_timeout,
# the scan loop every scan_interval).
STUCK_AFTER: Final = 5.0

# A connect attempt (TCP, TLS handshake) that has not returned by then is stuck: paho's socket
# timeouts end a black-holed one well before.
CONNECT_STUCK_AFTER: Final = 60.0

# How long a clean stop waits for the outboxes to empty through the bridge's session.
DRAIN_TIMEOUT: Final = 2.0

ONLINE: Final = b"online"
OFFLINE: Final = b"offline"


def link_options(settings: Settings) -> LinkOptions:
    """Map the ``[mqtt]`` section onto the link's options (secrets already resolved)."""
    m = settings.mqtt
    tls = None
    if m.tls.enabled:
        tls = TlsOptions(
            ca_file=str(m.tls.ca_file) if m.tls.ca_file else None,
            cert_file=str(m.tls.cert_file) if m.tls.cert_file else None,
            key_file=str(m.tls.key_file) if m.tls.key_file else None,
            key_password=m.tls.key_password_value(),
            check_hostname=m.tls.check_hostname,
        )
    return LinkOptions(
        host=m.host,
        port=m.port,
        protocol=m.protocol,
        keepalive=m.keepalive,
        username=m.username,
        password=m.password_value(),
        tls=tls,
        reconnect_min_delay=m.reconnect_min_delay,
        reconnect_max_delay=m.reconnect_max_delay,
        max_inflight=settings.outbox.window + 8,
    )


def session_options(settings: Settings) -> SessionOptions:
    r = settings.readers
    return SessionOptions(
        prefix=settings.topics.prefix,
        friendly_names=dict(settings.topics.friendly_names),
        client_id_prefix=settings.mqtt.client_id_prefix,
        host_id=settings.topics.host_id,
        qos_status=settings.mqtt.qos_status,
        read_timeout=r.read_timeout,
        max_message_size=r.max_message_size,
        command_timeout=r.command_timeout,
        identify_timeout=r.identify_timeout,
        log_messages=settings.logging.level.lower() == "debug",
    )


def courier_options(settings: Settings) -> CourierOptions:
    o = settings.outbox
    return CourierOptions(
        limits=OutboxLimits(max_messages=o.max_messages, max_bytes=o.max_bytes, ttl=o.ttl),
        window=o.window,
        qos=settings.mqtt.qos_messages,
        max_packet_size=o.max_packet_size,
    )


def make_backend(settings: Settings) -> Backend:
    if settings.readers.simulate > 0 or settings.readers.backend == "simulated":
        return get_backend("simulated", count=max(1, settings.readers.simulate),
                           stream_rate=settings.readers.simulate_stream_rate)
    return get_backend(settings.readers.backend)


class BridgeApp:
    """One bridge process's parts, started and stopped in the right order."""

    def __init__(
        self,
        settings: Settings,
        *,
        backend: Backend | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.boot_id = secrets.token_hex(8)
        self.metrics = metrics if metrics is not None else Metrics()
        self.backend = backend if backend is not None else make_backend(settings)
        self.started_at = datetime.now(UTC)
        self.topics = BridgeTopics(settings.topics.bridge_prefix, settings.topics.host_id)
        self.metrics.build_info.info({"version": __version__, "host_id": settings.topics.host_id})
        options = link_options(settings)
        self.spool = self._open_spool(settings)
        # One thread drives every MQTT connection, the outboxes and the spool.
        self.loop = IoLoop()
        self.courier = Courier(courier_options(settings), metrics=self.metrics, spool=self.spool,
                               loop=self.loop)
        self.websocket: WebSocketEndpoint | None = None
        if settings.websocket.enabled:
            self.websocket = WebSocketEndpoint(settings.websocket, metrics=self.metrics,
                                               max_message_size=settings.readers.max_message_size)
        self.supervisor = Supervisor(
            self.backend,
            options=session_options(settings),
            link_options=options,
            metrics=self.metrics,
            courier=self.courier,
            boot_id=self.boot_id,
            scan_interval=settings.readers.scan_interval,
            on_change=self._readers_changed,
            observers=(self.websocket.hub,) if self.websocket is not None else (),
        )
        self.payments = self._payment_service()
        self.link = MqttLink(
            options,
            client_id=f"{settings.mqtt.client_id_prefix}-{settings.topics.host_id}",
            name="bridge",
            will=Publication(self.topics.status, OFFLINE, qos=1, retain=True),
            births=[Publication(self.topics.status, ONLINE, qos=1, retain=True),
                    self._info_publication()],
            subscriptions=[(f"{settings.topics.prefix}+/+/SendCommand", 1),
                           *(self.payments.subscriptions() if self.payments else ())],
            on_message=self._bridge_message,
            metrics=self.metrics,
            on_published=self.courier.published,
            on_ready=self.courier.link_ready,
            on_taken_back=self.courier.taken_back,
            loop=self.loop,
        )
        self.courier.set_fallback(self.link)
        if self.payments is not None:
            self.payments.attach(self.link)
        self.ops: OpsServer | None = None
        if settings.metrics.enabled:
            self.ops = OpsServer(self.metrics, liveness=self.liveness, readiness=self.readiness,
                                 address=settings.metrics.address, port=settings.metrics.port)
        self._stopped = False

    def _open_spool(self, settings: Settings) -> Spool | None:
        path = settings.outbox.spool_file(os.environ)
        if path is None:
            self.metrics.spool_enabled.set(0)
            return None

        def failed(reason: str) -> None:
            self.metrics.spool_failures.labels(reason.split(":", 1)[0]).inc()
            self.metrics.spool_enabled.set(0)

        spool = Spool(path, max_bytes=settings.outbox.spool_max_bytes, on_failure=failed)
        self.metrics.spool_enabled.set(1 if spool.ok else 0)
        return spool

    def _payment_service(self) -> PaymentRequestService | None:
        """The MPPG request/response service on the bridge link, when ``[mppg]`` enables it."""
        if not self.settings.mppg.enabled:
            return None
        from bridge.mppg.service import PaymentRequestService  # noqa: PLC0415 - optional part

        return PaymentRequestService(self.settings.mppg, self.topics.root,
                                     registry=self.metrics.registry)

    def _bridge_message(self, inbound: InboundMessage) -> None:
        """Messages on the bridge's own session: payment requests, or stray commands."""
        if inbound.topic.startswith(self.topics.root + "/"):
            if self.payments is not None:
                self.payments.on_message(inbound)
            return
        self._command_without_reader(inbound)

    # -- health -------------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """Are the loops turning? (``/healthz``, and the systemd watchdog.)"""
        now = time.monotonic()
        stuck: list[str] = []
        scan_limit = STUCK_AFTER + 2 * self.settings.readers.scan_interval
        if now - self.supervisor.heartbeat > scan_limit:
            stuck.append("reader-scan")
        for session in self.supervisor.sessions():
            if not session.alive or session.stopping.is_set():
                continue
            if now - session.read_heartbeat > STUCK_AFTER:
                stuck.append(f"hid-read[{session.info.path}]")
            # A writer is idle (waiting for a command) or busy with one command, which ends
            # by its response or its timeout: busy for longer means a wedged write.
            busy = session.writer_busy_since
            if busy is not None and now - busy > session.writer_limit + STUCK_AFTER:
                stuck.append(f"reader[{session.info.path}]")
        if not self.loop.alive() or now - self.loop.heartbeat > STUCK_AFTER:
            stuck.append("mqtt-io")
        connecting = self.loop.connector_busy_since
        if connecting is not None and now - connecting > CONNECT_STUCK_AFTER:
            stuck.append("mqtt-connect")
        return (not stuck), {"stuck": stuck}

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """MQTT connected and every expected reader open? (``/readyz``)"""
        reasons: list[str] = []
        if not self.link.connected.is_set():
            reasons.append(f"mqtt: {self.link.last_error or 'not connected'}")
        open_serials: list[str] = []
        for session in self.supervisor.sessions():
            if session.identity is None or not session.alive:
                continue
            open_serials.append(session.identity.serial)
            if session.link is not None and not session.link.connected.is_set():
                reasons.append(f"reader {session.identity.serial}: mqtt not connected")
        missing = sorted(set(self.settings.readers.expected) - set(open_serials))
        if missing:
            reasons.append(f"expected readers not open: {', '.join(missing)}")
        details: dict[str, object] = {"reasons": reasons, "readers": sorted(open_serials)}
        if self.spool is not None:
            # Degraded, not unready: the in-memory outbox still delivers.
            details["spool"] = "ok" if self.spool.ok else f"off: {self.spool.failure}"
        return (not reasons), details

    def _info_publication(self) -> Publication:
        roots = self.supervisor.connected_roots()
        info = {
            "host_id": self.settings.topics.host_id,
            "bridge_version": __version__,
            "boot_id": self.boot_id,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "device_prefix": self.settings.topics.prefix,
            "protocol": self.settings.mqtt.protocol,
            "readers": roots,
        }
        return Publication(self.topics.info, json.dumps(info).encode(), qos=1, retain=True)

    def _command_without_reader(self, inbound: InboundMessage) -> None:
        """Commands are never stored: one for a reader of ours that is gone (unplugged, or its
        MQTT session down) is refused on its ``Error`` topic at once. Roots we never served are
        left alone: another bridge on the same broker may own them."""
        root = parse_send_command_topic(self.settings.topics.prefix, inbound.topic)
        if root is None or inbound.retain or not self.supervisor.known_root(root):
            return
        session = self.supervisor.session_for_root(root)
        if session is not None and session.link is not None and session.link.ready.is_set():
            return  # the reader's own session has it
        rejection = Rejection("reader_absent", "the reader is not connected; nothing was stored")
        self.metrics.command_rejected(rejection.reason)
        _log.warning("command_rejected", reason=rejection.reason, topic=inbound.topic,
                     size=len(inbound.payload))
        report = rejection_report(rejection, topic=inbound.topic, size=len(inbound.payload))
        self.link.publish(ReaderTopics.for_root(root).error, report, qos=1,
                          kind="error", correlation_data=inbound.correlation_data)

    def _readers_changed(self) -> None:
        info = self._info_publication()
        self.link.set_births([Publication(self.topics.status, ONLINE, qos=1, retain=True), info])
        if self.link.connected.is_set():
            self.link.publish(info.topic, info.payload, qos=1, retain=True, kind="status")

    def start(self) -> None:
        _log.info("bridge_starting", version=__version__, host_id=self.settings.topics.host_id,
                  broker=f"{self.settings.mqtt.host}:{self.settings.mqtt.port}",
                  backend=getattr(self.backend, "name", "?"))
        if self.websocket is not None:
            # First: a port that cannot be bound stops the start before anything else runs.
            self.websocket.start(self.supervisor)
        if self.ops is not None:
            self.ops.start()
        self.loop.start()
        self.courier.start()
        if self.payments is not None:
            self.payments.start()
        self.link.start()
        self.supervisor.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        _log.info("bridge_stopping")
        if self.websocket is not None:
            self.websocket.stop()  # clients first: no new commands while readers close
        self.supervisor.stop()
        # Messages taken back from the readers' sessions get a last chance on the bridge's
        # own; whatever remains stays in the spool for the next start.
        if self.link.ready.is_set():
            left = self.courier.drain(DRAIN_TIMEOUT)
            if left:
                _log.warning("outbox_not_drained", remaining=left,
                             spooled=self.spool is not None and self.spool.ok)
        self.courier.stop()
        if self.payments is not None:
            self.payments.stop()
        self.link.stop(final=[Publication(self.topics.status, OFFLINE, qos=1, retain=True)])
        self.loop.stop()
        if self.spool is not None:
            self.spool.close()
        if self.ops is not None:
            self.ops.stop()
        _log.info("bridge_stopped")

    def run(self, stop: threading.Event, notifier: SystemdNotifier | None = None) -> int:
        """Start, wait for ``stop``, shut down; the process exit code.

        Under systemd (``Type=notify``): ``READY=1`` once started, ``WATCHDOG=1`` at half the
        watchdog interval but only while ``liveness()`` holds, so a stuck reader or MQTT loop
        stops the pings and systemd restarts us; ``STOPPING=1`` on the way out.
        """
        notifier = notifier if notifier is not None else SystemdNotifier()
        interval = watchdog_interval()
        tick = min(1.0, interval / 2) if interval else 1.0
        self.start()
        notifier.notify("READY=1", "STATUS=bridging readers to MQTT")
        try:
            while not stop.wait(tick):
                if interval:
                    alive, details = self.liveness()
                    if alive:
                        notifier.notify("WATCHDOG=1")
                    else:
                        _log.error("watchdog_withheld", stuck=details.get("stuck"))
        finally:
            notifier.notify("STOPPING=1")
            self.stop()
        return 0


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop``; a second one exits at once. Restores the old handlers."""
    hits: list[float] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        hits.append(time.monotonic())
        _log.info("signal_received", signal=signal.Signals(signum).name)
        if len(hits) > 1:
            raise SystemExit(1)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(settings: Settings, *, backend: Backend | None = None) -> int:
    stop = threading.Event()
    app = BridgeApp(settings, backend=backend)
    with stop_on_signals(stop):
        return app.run(stop)


__all__ = ["BridgeApp", "courier_options", "link_options", "make_backend", "run", "session_options"]
