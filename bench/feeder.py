"""Simulated readers in their own process, so their CPU is never counted as the bridge's.

``python -m bench.feeder --dir D --serials A,B --pattern single --rate 1000 --seconds 10``
listens on ``D/<serial>.sock`` (SOCK_SEQPACKET: one datagram per 64-byte HID report). A
publisher under test (the bridge through ``bench.sockets``, or a baseline) connects and reads
reports as from a HID device; the bridge's commands are answered by the project's own
``SimulatedReader``. On the line ``go`` on stdin every reader streams marked messages for
``--seconds`` (``single``: ``--rate`` single-report messages a second; ``mix``: every 5 ms four
single-report messages and one 1,226-byte message), then the feeder prints
``{"sent": {serial: count}}`` and exits when stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
from pathlib import Path

from bench.common import marked_message
from bridge.errors import DeviceGoneError
from bridge.mms import packetize
from bridge.simulator import SimulatedReader


class FedReader:
    def __init__(self, serial: str, path: Path) -> None:
        self.serial = serial
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.sim = SimulatedReader(serial, auto_present=None)
        self.conn: socket.socket | None = None
        self.connected = threading.Event()
        self.send_lock = threading.Lock()
        self.sent = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            self.conn = conn
            self.connected.set()
            threading.Thread(target=self._host_reports, args=(conn,), daemon=True).start()
            threading.Thread(target=self._device_reports, args=(conn,), daemon=True).start()

    def _host_reports(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while report := conn.recv(64):
                self.sim.handle_host_report(report)

    def _device_reports(self, conn: socket.socket) -> None:
        try:
            while True:
                report = self.sim.next_device_report(0.5)
                if report is not None:
                    self.send([report])
        except (OSError, DeviceGoneError):
            return

    def send(self, reports: list[bytes]) -> None:
        conn = self.conn
        if conn is None:
            return
        with self.send_lock:
            for report in reports:
                conn.send(report)

    def stream(self, pattern: str, rate: float, seconds: float) -> None:
        start = due = time.monotonic()
        counter = 0
        step = 0.005 if pattern == "mix" else 1.0 / rate
        try:
            while time.monotonic() - start < seconds:
                now = time.monotonic()
                if now < due:
                    time.sleep(due - now)
                group = 5 if pattern == "mix" else 1
                for index in range(group):
                    message = marked_message(counter, time.monotonic_ns(), big=index == 4)
                    self.send(packetize(message))
                    counter += 1
                due += step
        except OSError:
            pass
        self.sent = counter


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feeder")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--serials", required=True)
    parser.add_argument("--pattern", choices=("single", "mix"), default="single")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    readers = [FedReader(serial, Path(args.dir) / f"{serial}.sock")
               for serial in args.serials.split(",")]
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "go":
            break
    else:
        return 0
    threads = [threading.Thread(target=r.stream, args=(args.pattern, args.rate, args.seconds))
               for r in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"sent": {r.serial: r.sent for r in readers}}), flush=True)
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
