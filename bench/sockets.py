"""The bridge under test, reading its readers from ``bench.feeder`` over Unix sockets.

``python -m bench.sockets SOCKET...`` runs the real bridge (``bridge.app.run``, settings from
the environment like ``magtek-bridge run``) with a backend whose transports read one report
per ``recv`` (a poll and a read per report, as hidapi does on hidraw; a drain's read alone).
The simulated readers live in the feeder's process, so this process's CPU is the bridge's alone.
"""

from __future__ import annotations

import os
import select
import socket
import sys
from pathlib import Path

from bridge.app import run
from bridge.config import load_settings
from bridge.errors import DeviceGoneError, DeviceNotFoundError, TransportError
from bridge.logs import configure_logging
from bridge.transport.base import DeviceInfo


class SocketTransport:
    def __init__(self, info: DeviceInfo) -> None:
        self._info = info
        self._sock: socket.socket | None = None
        self._poller: select.poll | None = None

    @property
    def info(self) -> DeviceInfo:
        return self._info

    @property
    def report_len(self) -> int:
        return 64

    def open(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(self._info.path)
        except OSError as exc:
            sock.close()
            raise DeviceGoneError(str(exc)) from exc
        sock.setblocking(False)
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def read_report(self, timeout: float) -> bytes | None:
        # As hidapi reads hidraw: a poll with the timeout, then a read; with timeout 0 (a
        # drain) the read alone. The socket stays non-blocking: a settimeout() per call would
        # add a system call per report that hidapi does not make.
        sock, poller = self._sock, self._poller
        if sock is None or poller is None:
            raise DeviceGoneError("closed")
        try:
            if timeout > 0 and not poller.poll(max(1, int(timeout * 1000))):
                return None
            report = sock.recv(64)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise DeviceGoneError(str(exc)) from exc
        if not report:
            raise DeviceGoneError("feeder closed the connection")
        return report

    def write_report(self, report: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise DeviceGoneError("closed")
        try:
            # Non-blocking (the read side needs it): wait for room, as a HID write blocks.
            while True:
                try:
                    sock.send(report)
                    break
                except BlockingIOError:
                    select.select([], [sock], [], 1.0)
        except OSError as exc:
            raise TransportError(str(exc)) from exc


class SocketBus:
    name = "socket"

    def __init__(self, paths: list[str]) -> None:
        self._paths = paths

    def _info(self, path: str) -> DeviceInfo:
        return DeviceInfo(path=path, vendor_id=0x0801, product_id=0x2020, product="DynaFlex II",
                          usb_serial=Path(path).stem, backend=self.name)

    def enumerate(self) -> list[DeviceInfo]:
        return [self._info(p) for p in self._paths if os.path.exists(p)]

    def open(self, info: DeviceInfo) -> SocketTransport:
        if info.path not in self._paths:
            raise DeviceNotFoundError(info.path)
        return SocketTransport(self._info(info.path))


def main() -> int:
    settings = load_settings(None)
    configure_logging(settings.logging.level, settings.logging.format)
    return run(settings, backend=SocketBus(sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
