"""systemd's notify protocol (READY=1, WATCHDOG=1, STOPPING=1) over ``$NOTIFY_SOCKET``.

Stdlib only: a unix datagram per notification. A no-op outside systemd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class SystemdNotifier:
    """Sends state lines to the socket systemd named; silent when there is none."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket name is given with a leading '@' (sd_notify(3)).
        self.address = "\0" + address[1:] if address.startswith("@") else address

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; ``False`` when not under systemd or on error."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
        except OSError:
            return False
        return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds of ``WatchdogSec=`` when it applies to this process, else ``None``."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


__all__ = ["SystemdNotifier", "watchdog_interval"]
