"""Pieces every benchmark process shares: the broker, the marked test messages, /proc readings.

Every simulated device message carries a marker TLV (tag DF812A) holding the monotonic clock
(ns, CLOCK_MONOTONIC is system-wide on Linux) when the feeder wrote it and a per-reader
counter, so the out-of-process subscriber pairs each arrival with its own send, and counts
what never came (lost) and what it did not expect (stray, duplicate).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

from bridge.mms import build_notification

MARK: Final = b"\xdf\x81\x2a\x0c"  # tag DF812A, 12 bytes: monotonic ns (8) + counter (4)
BIG_PAD: Final = 1180  # a 1,226-byte card-data sized message (the realistic mix)
MODEL: Final = "DynaFlexII"
PREFIX: Final = "MagTek/Device/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def marked_message(counter: int, sent_ns: int, big: bool = False) -> bytes:
    payload = MARK + sent_ns.to_bytes(8, "big") + (counter & 0xFFFFFFFF).to_bytes(4, "big")
    if big:
        payload += b"\xdf\x81\x29\x82" + BIG_PAD.to_bytes(2, "big") + bytes(BIG_PAD)
    return build_notification(0x1001, (counter & 0xFFFFFFFF).to_bytes(4, "big"), payload)


def read_mark(hex_payload: bytes) -> tuple[int, int] | None:
    """(sent ns, counter) of a marked message given as the published hex, else None."""
    try:
        raw = bytes.fromhex(hex_payload.decode("ascii"))
    except ValueError:
        return None
    at = raw.find(MARK)
    if at < 0 or len(raw) < at + 16:
        return None
    return (int.from_bytes(raw[at + 4:at + 12], "big"),
            int.from_bytes(raw[at + 12:at + 16], "big"))


def topic_for(serial: str) -> str:
    return f"{PREFIX}{MODEL}/{serial}/MMSMessage"


class Mosquitto:
    """A private broker on a free loopback port for the whole run."""

    def __init__(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        self.dir = tempfile.mkdtemp()
        conf = Path(self.dir) / "m.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                 "set_tcp_nodelay true", "max_queued_messages 100000"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of a whole process (every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> int:
    """A number from /proc/<pid>/status (``VmRSS`` in kB, ``Threads``...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def publisher_args(prog: str) -> argparse.Namespace:
    """A baseline publisher's command line: the broker's ``--port`` and the feeder's sockets."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("sockets", nargs="+")
    return parser.parse_args()

