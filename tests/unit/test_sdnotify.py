"""sd_notify over a real unix datagram socket."""

from __future__ import annotations

import os
import socket

from bridge.sdnotify import SystemdNotifier, watchdog_interval


def test_notify_sends_datagrams(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
        assert notifier.notify("READY=1", "STATUS=up")
        assert server.recv(256) == b"READY=1\nSTATUS=up"


def test_abstract_socket_and_disabled():
    name = f"@magtek-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name[1:])
        server.settimeout(2)
        assert SystemdNotifier({"NOTIFY_SOCKET": name}).notify("WATCHDOG=1")
        assert server.recv(64) == b"WATCHDOG=1"
    assert not SystemdNotifier({}).notify("READY=1")


def test_watchdog_interval():
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 20.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
