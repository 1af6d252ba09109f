"""The bridge process: wiring, start-up, and a staged, time-boxed shutdown.

Start: bridge-level MQTT session (``MagTek/Bridge/<host id>/State`` = ``online``, will
``offline``; never a ``Status`` topic, which reader lists would show as a device) and the
reader supervisor, independently: readers are opened and identified even
while the broker is unreachable (a store Pi often boots before its network).

Stop (SIGTERM/SIGINT only set an event): stop scanning -> each reader publishes retained
``disconnected`` and disconnects cleanly -> readers closed -> bridge ``offline`` -> exit 0.

Beside it: ``bridge.app_options`` (settings -> each part's options), ``bridge.health``
(liveness, readiness) and ``bridge.watchdog`` (the main wait and the systemd pings).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import structlog

from bridge import __version__, health, watchdog
from bridge.app_options import courier_options, link_options, make_backend, session_options
from bridge.config import Settings, insecure_settings
from bridge.courier import Courier
from bridge.errors import ConfigError
from bridge.ghosts import GhostSweeper, RootMemory, memory_file
from bridge.http import OpsServer, raise_open_file_limit
from bridge.intake import Rejection, clears_retained_command
from bridge.metrics import Metrics
from bridge.mqtt.link import InboundMessage, LinkOptions, MqttLink, Publication
from bridge.mqtt.loop import IoLoop
from bridge.mqtt.topics import BridgeTopics, ReaderTopics, parse_send_command_topic
from bridge.refusals import RefusalReporter
from bridge.sdnotify import SystemdNotifier
from bridge.signals import stop_on_signals
from bridge.simulator.control import apply_action, parse_present_topic, present_wildcard
from bridge.spool import Spool
from bridge.supervisor import Supervisor
from bridge.throttle import ErrorReport
from bridge.transport import Backend
from bridge.transport.simulated import SimulatedBus, SimulatedTransport
from bridge.websocket import WebSocketEndpoint

if TYPE_CHECKING:
    from bridge.mppg.service import PaymentRequestService

_log = structlog.get_logger("bridge.app")

# How long a clean stop waits for the outboxes to empty through the bridge's session.
DRAIN_TIMEOUT: Final = 2.0

# After the first "no_reader_attached" warning, repeat it this often while it lasts.
ABSENT_REPEAT: Final = 600.0

ONLINE: Final = b"online"
OFFLINE: Final = b"offline"
READER_ABSENT: Final = Rejection(
    "reader_absent", "the reader is not connected; nothing was stored")


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
        self.payments = self._payment_service(options)
        self.root_memory = RootMemory(memory_file(os.environ))
        self.ghosts = GhostSweeper(
            self.root_memory, prefix=settings.topics.prefix,
            friendly_names=settings.topics.friendly_names,
            publish=self._publish_now, served_now=self.supervisor.connected_roots)
        self.link = MqttLink(
            options,
            client_id=f"{settings.mqtt.client_id_prefix}-{settings.topics.host_id}",
            name="bridge",
            will=Publication(self.topics.status, OFFLINE, qos=1, retain=True),
            births=[Publication(self.topics.status, ONLINE, qos=1, retain=True),
                    self._info_publication()],
            subscriptions=[(f"{settings.topics.prefix}+/+/SendCommand", 1),
                           (self.topics.info, 1),  # our own retained info: roots served
                           *self._simulator_subscriptions()],
            on_message=self._bridge_message,
            metrics=self.metrics,
            on_published=self.courier.published,
            on_taken_back=self.courier.taken_back,
            loop=self.loop,
        )
        self.courier.set_fallback(self.link)
        self.ops: OpsServer | None = None
        if settings.metrics.enabled:
            self.ops = self._ops_server(settings)
        self._stopped = False
        self._absent_since: float | None = time.monotonic()
        self._absent_logged_at: float | None = None
        # Refusals for absent readers, coalesced per reader root (only roots we served).
        self._absent_errors: dict[str, RefusalReporter] = {}
        self._absent_lock = threading.Lock()

    def _ops_server(self, settings: Settings) -> OpsServer:
        address, port = settings.metrics.address, settings.metrics.port
        try:
            return OpsServer(self.metrics, liveness=self.liveness, readiness=self.readiness,
                             address=address, port=port,
                             max_connections=settings.metrics.max_connections,
                             request_timeout=settings.metrics.request_timeout)
        except OSError as exc:
            raise ConfigError(
                f"metrics.port: cannot listen on {address}:{port} for /metrics, /healthz and "
                f"/readyz: {exc.strerror or exc} (another magtek-bridge running? choose another "
                "port with [metrics] port or MAGTEK_BRIDGE_METRICS__PORT, or disable it with "
                "[metrics] enabled = false)") from exc

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

    def _payment_service(self, options: LinkOptions) -> PaymentRequestService | None:
        """The MPPG request/response service, on its own persistent MQTT session (requests
        sent while the bridge is down are kept; reader commands never are), when ``[mppg]``
        enables it."""
        if not self.settings.mppg.enabled:
            return None
        from bridge.mppg.service import PaymentRequestService  # noqa: PLC0415 - optional part

        return PaymentRequestService(
            self.settings.mppg, self.topics.root, registry=self.metrics.registry,
            link_options=options, link_metrics=self.metrics, environ=dict(os.environ),
            loop=self.loop,
            client_id=f"{self.settings.mqtt.client_id_prefix}-{self.settings.topics.host_id}"
                      "-payments")

    def _simulator_subscriptions(self) -> list[tuple[str, int]]:
        if not isinstance(self.backend, SimulatedBus):
            return []
        return [(present_wildcard(self.settings.topics.prefix), 1)]

    def _publish_now(self, publication: Publication) -> None:
        self.link.publish(publication.topic, publication.payload, qos=publication.qos,
                          retain=publication.retain, kind="status")

    def _bridge_message(self, inbound: InboundMessage) -> None:
        """Messages on the bridge's own session: its retained info, simulator actions, or
        stray reader commands."""
        if inbound.topic == self.topics.info:
            self._own_info(inbound)
            return
        present_root = parse_present_topic(self.settings.topics.prefix, inbound.topic)
        if present_root is not None:
            if inbound.retain:
                # Replayed at every (re)connect, it would present a card out of nowhere.
                _log.warning("simulator_action_refused", root=present_root,
                             reason="retained (clear it with an empty retained publish)")
            else:
                self._simulator_action(present_root, inbound.payload)
            return
        self._command_without_reader(inbound)

    # -- health -------------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """Are the loops turning? (``/healthz``, and the systemd watchdog.)"""
        return health.liveness(self)

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """MQTT connected and every expected reader open? (``/readyz``)"""
        return health.readiness(self)

    def check_readers(self, now: float | None = None) -> None:
        """Warn when no reader has been open for ``readers.absent_warning`` seconds, then
        every ``ABSENT_REPEAT`` seconds while it lasts: otherwise a service with its reader
        unplugged, or hidden by permissions, looks healthy in the journal."""
        grace = self.settings.readers.absent_warning
        if not self.settings.readers.enabled:
            return  # payments only: no reader is expected
        now = time.monotonic() if now is None else now
        if any(s.identity is not None and s.alive for s in self.supervisor.sessions()):
            if self._absent_logged_at is not None:
                _log.info("reader_attached_again")
            self._absent_since = self._absent_logged_at = None
            return
        if self._absent_since is None:
            self._absent_since = now
        if grace <= 0 or now - self._absent_since < grace:
            return
        if self._absent_logged_at is None or now - self._absent_logged_at >= ABSENT_REPEAT:
            self._absent_logged_at = now
            _log.warning(
                "no_reader_attached", seconds=round(now - self._absent_since),
                backend=getattr(self.backend, "name", "?"),
                hint="check the USB cable; 'magtek-bridge devices' lists what this host sees; "
                     "the udev rule 70-magtek-mms.rules gives the hidraw node to group magtek")

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
            # What a restart without a state directory reads back (bridge.ghosts).
            "served_roots": self.root_memory.as_json(),
        }
        return Publication(self.topics.info, json.dumps(info).encode(), qos=1, retain=True)

    def _command_without_reader(self, inbound: InboundMessage) -> None:
        """Commands are never stored: one for a reader of ours that is gone (unplugged, or its
        MQTT session down) is refused on its ``Error`` topic at once. Roots we never served are
        left alone: another bridge on the same broker may own them."""
        root = parse_send_command_topic(self.settings.topics.prefix, inbound.topic)
        if root is None or inbound.retain or not self.supervisor.known_root(root):
            return
        if clears_retained_command(inbound.payload):
            return  # clearing a retained command: nothing to run, nothing to refuse
        session = self.supervisor.session_for_root(root)
        if session is not None and session.link is not None and session.link.ready.is_set():
            session.link.read_now()  # the reader's own session has it (or will in a moment)
            return
        self.metrics.command_rejected(READER_ABSENT.reason)
        with self._absent_lock:
            reporter = self._absent_errors.get(root)
            if reporter is None:
                reporter = self._absent_errors[root] = self._absent_reporter(root)
        reporter.refused(READER_ABSENT, topic=inbound.topic, size=len(inbound.payload),
                         correlation_data=inbound.correlation_data, command=inbound.payload)

    def _absent_reporter(self, root: str) -> RefusalReporter:
        error_topic = ReaderTopics.for_root(root).error

        def send(report: ErrorReport, topic: str | None, size: int,
                 correlation_data: bytes | None) -> None:
            _log.warning("command_rejected", reason=report.reason, detail=report.detail,
                         topic=topic, size=size, root=root, suppressed=report.suppressed)
            self.link.publish(error_topic, report.body, qos=1, kind="error",
                              correlation_data=correlation_data)

        return RefusalReporter(interval=self.settings.readers.error_interval, burst=5,
                               send=send, summary_topic=f"{root}/SendCommand",
                               schedule=self.loop.call_later)

    def _own_info(self, inbound: InboundMessage) -> None:
        """Our retained info as the broker kept it: the roots a previous run served."""
        if not inbound.retain:
            return
        self.ghosts.seed(inbound.payload)
        self._readers_changed()

    def _simulator_action(self, root: str, payload: bytes) -> None:
        """``<root>/Simulator/Present``: a card for a simulated reader, never a real one."""
        session = self.supervisor.session_for_root(root)
        transport = session.transport if session is not None else None
        if not isinstance(transport, SimulatedTransport):
            _log.warning("simulator_action_refused", root=root,
                         reason="not a connected simulated reader")
            return
        done, what = apply_action(transport.reader, payload)
        _log.info("simulator_action", root=root, done=done, result=what)

    def _readers_changed(self) -> None:
        for session in self.supervisor.sessions():
            identity = session.identity
            if identity is not None and session.alive:
                self.ghosts.reader_identified(identity.serial, identity.model, identity.root)
        info = self._info_publication()
        self.link.set_births([Publication(self.topics.status, ONLINE, qos=1, retain=True), info])
        if self.link.connected.is_set():
            self.link.publish(info.topic, info.payload, qos=1, retain=True, kind="status")

    def start(self) -> None:
        _log.info("bridge_starting", version=__version__, host_id=self.settings.topics.host_id,
                  broker=f"{self.settings.mqtt.host}:{self.settings.mqtt.port}",
                  backend=getattr(self.backend, "name", "?"),
                  hid_api=getattr(self.backend, "api", None))
        for setting, why in insecure_settings(self.settings):
            _log.warning("insecure_setting", setting=setting, detail=why)
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
        self.ghosts.sweep()  # roots remembered in the state directory (queued until connected)
        if self.settings.readers.enabled:
            self.supervisor.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        _log.info("bridge_stopping")
        if self.websocket is not None:
            self.websocket.stop()  # clients first: no new commands while readers close
        self.supervisor.stop()
        with self._absent_lock:
            for reporter in self._absent_errors.values():
                reporter.close()
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
        watchdog.serve_until_stopped(self, stop, notifier)
        return 0


def run(settings: Settings, *, backend: Backend | None = None) -> int:
    raise_open_file_limit()  # idle HTTP/WebSocket clients hold descriptors
    stop = threading.Event()
    app = BridgeApp(settings, backend=backend)
    with stop_on_signals(stop):
        return app.run(stop)


__all__ = ["BridgeApp", "courier_options", "link_options", "make_backend", "run", "session_options"]
