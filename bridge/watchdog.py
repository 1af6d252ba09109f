"""The bridge's main wait: start, run the periodic checks until ``stop``, shut down.

Under systemd (``Type=notify``): ``READY=1`` once started, ``WATCHDOG=1`` at half the watchdog
interval but only while the app's liveness holds, so a stuck reader or MQTT loop stops the
pings and systemd restarts us; ``STOPPING=1`` on the way out.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import structlog

from bridge.sdnotify import SystemdNotifier, watchdog_interval

if TYPE_CHECKING:
    from bridge.app import BridgeApp

# The app's own events: logged under its name, as before this loop had a module of its own.
_log = structlog.get_logger("bridge.app")


def serve_until_stopped(app: BridgeApp, stop: threading.Event,
                        notifier: SystemdNotifier) -> None:
    """Start ``app``, check it every tick until ``stop`` is set, then stop it (always)."""
    interval = watchdog_interval()
    tick = min(1.0, interval / 2) if interval else 1.0
    app.start()
    notifier.notify("READY=1", "STATUS=bridging readers to MQTT")
    try:
        while not stop.wait(tick):
            app.check_readers()
            if interval:
                alive, details = app.liveness()
                if alive:
                    notifier.notify("WATCHDOG=1")
                else:
                    _log.error("watchdog_withheld", stuck=details.get("stuck"))
    finally:
        notifier.notify("STOPPING=1")
        app.stop()


__all__ = ["serve_until_stopped"]
