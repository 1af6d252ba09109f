"""Health of a running bridge: liveness (are its loops turning? ``/healthz`` and the systemd
watchdog) and readiness (connected, with the readers it should have? ``/readyz``). Both only
look at the app's parts; neither changes anything.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from bridge.app import BridgeApp

# A loop that has not turned for this long is stuck (read loops turn every read_timeout,
# the scan loop every scan_interval).
STUCK_AFTER: Final = 5.0

# A connect attempt (TCP, TLS handshake) that has not returned by then is stuck: the socket
# timeouts (bridge.mqtt.wire.CONNECT_TIMEOUT) end a black-holed one well before.
CONNECT_STUCK_AFTER: Final = 60.0


def liveness(app: BridgeApp) -> tuple[bool, dict[str, object]]:
    """Are the loops turning? (``/healthz``, and the systemd watchdog.)"""
    now = time.monotonic()
    stuck: list[str] = []
    scan_limit = STUCK_AFTER + 2 * app.settings.readers.scan_interval
    if app.settings.readers.enabled and now - app.supervisor.heartbeat > scan_limit:
        stuck.append("reader-scan")
    for session in app.supervisor.sessions():
        if not session.alive or session.stopping.is_set():
            continue
        if now - session.read_heartbeat > STUCK_AFTER:
            stuck.append(f"hid-read[{session.info.path}]")
        # A writer is idle (waiting for a command) or busy with one command, which ends
        # by its response or its timeout: busy for longer means a wedged write.
        busy = session.writer_busy_since
        if busy is not None and now - busy > session.writer_limit + STUCK_AFTER:
            stuck.append(f"reader[{session.info.path}]")
    if not app.loop.alive() or now - app.loop.heartbeat > STUCK_AFTER:
        stuck.append("mqtt-io")
    connecting = app.loop.connector_busy_since
    if connecting is not None and now - connecting > CONNECT_STUCK_AFTER:
        stuck.append("mqtt-connect")
    payments = app.payments.link if app.payments is not None else None
    if payments is not None and not payments.thread_alive():
        stuck.append("mqtt-payments")
    return (not stuck), {"stuck": stuck}


def readiness(app: BridgeApp) -> tuple[bool, dict[str, object]]:
    """MQTT connected and every expected reader open? (``/readyz``)

    A payments-only bridge (``readers.enabled = false``) is ready once its MQTT sessions
    (its own and the payments service's) are connected: it expects no reader.
    """
    readers_enabled = app.settings.readers.enabled
    reasons: list[str] = []
    if not app.link.connected.is_set():
        reasons.append(f"mqtt: {app.link.last_error or 'not connected'}")
    payments = app.payments.link if app.payments is not None else None
    if payments is not None and not payments.connected.is_set():
        reasons.append(f"mqtt payments: {payments.last_error or 'not connected'}")
    open_serials: list[str] = []
    for session in app.supervisor.sessions():
        if session.identity is None or not session.alive:
            continue
        open_serials.append(session.identity.serial)
        if session.link is not None and not session.link.connected.is_set():
            reasons.append(f"reader {session.identity.serial}: mqtt not connected")
    missing = sorted(set(app.settings.readers.expected) - set(open_serials))
    if missing:
        reasons.append(f"expected readers not open: {', '.join(missing)}")
    # A bridge without a reader serves no till: not ready, and said so apart from the
    # broker ("state"), so an alert can tell a cable from a network problem.
    if readers_enabled and not open_serials and not missing:
        reasons.append("no readers: no MagTek reader is open (see 'magtek-bridge devices')")
    state = "ready" if not reasons else (
        "no_readers" if readers_enabled and not open_serials and app.link.connected.is_set()
        else "not_ready")
    details: dict[str, object] = {"state": state, "reasons": reasons,
                                  "readers": sorted(open_serials)}
    if not readers_enabled:
        details["readers_enabled"] = False  # payments only
    if app.spool is not None:
        # Degraded, not unready: the in-memory outbox still delivers.
        details["spool"] = "ok" if app.spool.ok else f"off: {app.spool.failure}"
    return (not reasons), details


__all__ = ["CONNECT_STUCK_AFTER", "STUCK_AFTER", "liveness", "readiness"]
