"""`python -m bench [--quick]`: measure the bridge against same-run baselines, print a table,
write bench/results/latest.json.

Measured so far: framing throughput, input latency (reader -> subscriber) against a bare paho
publisher, command round trip, single-report QoS 1 throughput against bare paho, start-up of
the in-process bridge. Needs `mosquitto` on PATH (scripts/test installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from bridge.app import BridgeApp
from bridge.config import load_settings
from bridge.logs import configure_logging
from bridge.metrics import Metrics
from bridge.mms import Reassembler, build_notification, commands, packetize
from bridge.transport.simulated import SimulatedBus

ROOT = "MagTek/Device/DynaFlexII/B123456"
RESULTS = Path(__file__).parent / "results" / "latest.json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    def __init__(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = _free_port()
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


def _client(port: int, on_message: Any = None) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_socket_open = lambda c, u, s: s.setsockopt(socket.IPPROTO_TCP,
                                                         socket.TCP_NODELAY, 1)
    if on_message is not None:
        client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_framing(quick: bool) -> dict[str, float]:
    out = {}
    for size in (64, 1024, 65536):
        message = bytes(range(256)) * (size // 256) or bytes(size)
        message = message[:size] if len(message) >= size else bytes(size)
        rounds = max(20, (2_000_000 if quick else 10_000_000) // size)
        start = time.perf_counter()
        reassembler = Reassembler()
        for _ in range(rounds):
            for report in packetize(message):
                reassembler.feed(report)
        elapsed = time.perf_counter() - start
        out[f"framing_mb_s_{size}b"] = round(size * rounds / elapsed / 1e6, 2)
    return out


def _message(counter: int, extra: int = 0) -> bytes:
    payload = b"" if not extra else b"\xdf\x81\x29\x82" + extra.to_bytes(2, "big") + bytes(extra)
    return build_notification(0x1001, counter.to_bytes(4, "big"), payload or None)


def bench_latency(port: int, n: int, extra: int) -> tuple[list[float], list[float]]:
    """(bridge, bare paho) one-way latencies in ms for messages of the given size."""
    arrivals: queue.Queue[tuple[int, float]] = queue.Queue()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        data = bytes.fromhex(message.payload.decode())
        arrivals.put((int.from_bytes(data[10:14], "big"), time.perf_counter()))

    sub = _client(port, on_message)
    sub.subscribe(f"{ROOT}/MMSMessage", 1)
    time.sleep(0.3)
    # Baseline: a bare paho publisher, same payloads, same broker.
    pub = _client(port)
    base = []
    for i in range(n):
        payload = _message(i, extra).hex().upper()
        t0 = time.perf_counter()
        pub.publish(f"{ROOT}/MMSMessage", payload, qos=1)
        _, t1 = arrivals.get(timeout=5)
        base.append((t1 - t0) * 1000)
    pub.loop_stop()
    pub.disconnect()
    # The bridge: the simulated reader emits, the bridge reassembles and publishes.
    bus = SimulatedBus(count=1, auto_present=None)
    settings = load_settings(None, environ={}, overrides={
        "mqtt": {"port": port}, "metrics": {"enabled": False},
        "readers": {"backend": "simulated", "scan_interval": 0.2},
        "logging": {"level": "warning"}})
    app = BridgeApp(settings, backend=bus, metrics=Metrics(CollectorRegistry(),
                                                           process_metrics=False))
    app.start()
    deadline = time.monotonic() + 10
    while not any(s.link and s.link.ready.is_set() for s in app.supervisor.sessions()):
        if time.monotonic() > deadline:
            raise RuntimeError("bridge did not connect")
        time.sleep(0.01)
    bridge = []
    reader = bus.readers[0]
    for i in range(n):
        t0 = time.perf_counter()
        reader.emit_message(_message(i, extra))
        _, t1 = arrivals.get(timeout=5)
        bridge.append((t1 - t0) * 1000)
    app.stop()
    sub.loop_stop()
    sub.disconnect()
    return bridge, base


def _start_bridge(port: int) -> tuple[BridgeApp, SimulatedBus]:
    bus = SimulatedBus(count=1, auto_present=None)
    settings = load_settings(None, environ={}, overrides={
        "mqtt": {"port": port}, "metrics": {"enabled": False},
        "readers": {"backend": "simulated", "scan_interval": 0.2},
        "logging": {"level": "warning"}})
    app = BridgeApp(settings, backend=bus, metrics=Metrics(CollectorRegistry(),
                                                           process_metrics=False))
    app.start()
    deadline = time.monotonic() + 10
    while not any(s.link and s.link.ready.is_set() for s in app.supervisor.sessions()):
        if time.monotonic() > deadline:
            raise RuntimeError("bridge did not connect")
        time.sleep(0.001)
    return app, bus


def bench_throughput(port: int, n: int) -> dict[str, float]:
    """Reader emitting as fast as it can, QoS 1, against a bare paho publisher."""
    got = threading.Semaphore(0)
    sizes: list[int] = []

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        sizes.append(len(message.payload) // 2)
        got.release()

    sub = _client(port, on_message)
    sub.subscribe(f"{ROOT}/MMSMessage", 1)
    time.sleep(0.3)
    out: dict[str, float] = {}
    singles = [_message(i) for i in range(n)]
    pub = _client(port)
    start = time.perf_counter()
    for message in singles:
        pub.publish(f"{ROOT}/MMSMessage", message.hex().upper(), qos=1)
    for _ in range(n):
        got.acquire(timeout=30)
    paho_rate = n / (time.perf_counter() - start)
    pub.loop_stop()
    pub.disconnect()
    app, bus = _start_bridge(port)
    reader = bus.readers[0]
    start = time.perf_counter()
    for message in singles:
        reader.emit_message(message)
    for _ in range(n):
        got.acquire(timeout=30)
    bridge_rate = n / (time.perf_counter() - start)
    # Realistic mix: 4 single-report status messages per ~1.2 KB card-data message.
    mixed = [_message(i, 1200 if i % 5 == 4 else 0) for i in range(n)]
    sizes.clear()
    start = time.perf_counter()
    for message in mixed:
        reader.emit_message(message)
    for _ in range(n):
        got.acquire(timeout=30)
    elapsed = time.perf_counter() - start
    app.stop()
    sub.loop_stop()
    sub.disconnect()
    out["throughput_msgs_s"] = round(bridge_rate)
    out["baseline_paho_msgs_s"] = round(paho_rate)
    out["throughput_vs_paho"] = round(bridge_rate / paho_rate, 3)
    out["throughput_x_line_rate"] = round(sum(sizes) / elapsed / 64_000, 2)
    return out


def bench_command(port: int, n: int) -> list[float]:
    responses: queue.Queue[float] = queue.Queue()
    sub = _client(port, lambda c, u, m: responses.put(time.perf_counter()))
    sub.subscribe(f"{ROOT}/MMSMessage", 1)
    bus = SimulatedBus(count=1, auto_present=None)
    settings = load_settings(None, environ={}, overrides={
        "mqtt": {"port": port}, "metrics": {"enabled": False},
        "readers": {"backend": "simulated"}, "logging": {"level": "warning"}})
    app = BridgeApp(settings, backend=bus, metrics=Metrics(CollectorRegistry(),
                                                           process_metrics=False))
    start = time.perf_counter()
    app.start()
    while not any(s.link and s.link.ready.is_set() for s in app.supervisor.sessions()):
        time.sleep(0.001)
    startup = time.perf_counter() - start
    time.sleep(0.3)
    latencies = []
    for i in range(n):
        t0 = time.perf_counter()
        sub.publish(f"{ROOT}/SendCommand", commands.get_serial_number(i % 256).hex(), qos=1)
        latencies.append((responses.get(timeout=5) - t0) * 1000)
    app.stop()
    sub.loop_stop()
    sub.disconnect()
    latencies.append(startup * 1000)  # carried out in the last slot, split off by the caller
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer samples (< 3 minutes)")
    args = parser.parse_args()
    configure_logging("warning", "console")
    n = 2000 if args.quick else 10000
    results: dict[str, Any] = {"quick": args.quick, "samples": n}
    results.update(bench_framing(args.quick))
    broker = Mosquitto()
    try:
        for label, extra in (("single", 0), ("multi", 400)):
            bridge, base = bench_latency(broker.port, n, extra)
            results[f"latency_{label}_p50_ms"] = round(_pct(bridge, 0.5), 3)
            results[f"latency_{label}_p99_ms"] = round(_pct(bridge, 0.99), 3)
            results[f"latency_{label}_max_ms"] = round(max(bridge), 3)
            results[f"baseline_{label}_p50_ms"] = round(_pct(base, 0.5), 3)
            results[f"baseline_{label}_p99_ms"] = round(_pct(base, 0.99), 3)
            if label == "single":
                results["added_latency_p50_ms"] = round(_pct(bridge, 0.5) - _pct(base, 0.5), 3)
                results["added_latency_p99_ms"] = round(_pct(bridge, 0.99) - _pct(base, 0.99), 3)
        results.update(bench_throughput(broker.port, n))
        command = bench_command(broker.port, max(200, n // 10))
        startup_ms = command.pop()
        results["command_latency_p50_ms"] = round(_pct(command, 0.5), 3)
        results["command_latency_p99_ms"] = round(_pct(command, 0.99), 3)
        results["startup_in_process_s"] = round(startup_ms / 1000, 3)
    finally:
        broker.stop()
    for key in ("cpu_pct_line_rate_1_reader", "rss_mb_4_readers", "rss_growth_mb_1m",
                "startup_s"):
        results.setdefault(key, None)  # not measured yet (issue 6 is open)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
