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
import sys
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
    app, bus = _start_bridge(port)
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
    start = time.perf_counter()
    app, _bus = _start_bridge(port)
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


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _messages_in(port: int) -> int:
    """Messages the bridge read from its readers, from its own /metrics."""
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith('magtek_bridge_mms_messages_total{direction="in"'):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def bench_process(port: int, readers: int, rate: float, seconds: float,
                  count_messages: int = 0) -> dict[str, float]:
    """The bridge as a real process: start-up, CPU and RSS while readers stream."""
    arrived = threading.Semaphore(0)
    connected = threading.Event()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        if message.topic.endswith("/Status") and message.payload == b"connected":
            connected.set()
        elif message.topic.endswith("/MMSMessage"):
            arrived.release()

    sub = _client(port, on_message)
    sub.subscribe([("MagTek/Device/+/+/Status", 1), ("MagTek/Device/+/+/MMSMessage", 0)])
    time.sleep(0.3)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAGTEK_BRIDGE_")},
           "MAGTEK_BRIDGE_MQTT__PORT": str(port), "MAGTEK_BRIDGE_METRICS__ENABLED": "false",
           "MAGTEK_BRIDGE_LOGGING__LEVEL": "warning",
           "MAGTEK_BRIDGE_READERS__SIMULATE_STREAM_RATE": str(rate),
           "MAGTEK_BRIDGE_TOPICS__HOST_ID": f"bench{readers}"}
    metrics_port = _free_port()
    env["MAGTEK_BRIDGE_METRICS__ENABLED"] = "true"
    env["MAGTEK_BRIDGE_METRICS__PORT"] = str(metrics_port)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--simulate", str(readers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, float] = {}
    try:
        if not connected.wait(30):
            raise RuntimeError("bridge process did not connect")
        out["startup_s"] = round(time.perf_counter() - start, 3)
        time.sleep(2)  # let every reader connect and the stream settle
        if count_messages:
            rss0, seen0 = _proc_rss_mb(proc.pid), _messages_in(metrics_port)
            deadline = time.monotonic() + 900
            seen = seen0
            while seen - seen0 < count_messages and time.monotonic() < deadline:
                time.sleep(1.0)
                seen = _messages_in(metrics_port)
            out["rss_growth_mb"] = round(_proc_rss_mb(proc.pid) - rss0, 2)
            out["messages"] = seen - seen0
        else:
            cpu0, t0 = _proc_cpu_seconds(proc.pid), time.perf_counter()
            seen0 = _messages_in(metrics_port)
            time.sleep(seconds)
            cpu = _proc_cpu_seconds(proc.pid) - cpu0
            elapsed = time.perf_counter() - t0
            out["cpu_pct"] = round(100 * cpu / elapsed, 2)
            # Did it keep up? Messages read from the readers per second, all readers.
            out["messages_s"] = round((_messages_in(metrics_port) - seen0) / elapsed)
        out["rss_mb"] = round(_proc_rss_mb(proc.pid), 1)
    finally:
        proc.terminate()
        proc.wait(20)
        sub.loop_stop()
        sub.disconnect()
    return out


def _paho_cpu(port: int, rate: float, seconds: float) -> tuple[float, float]:
    """CPU % of a bare paho publisher process at ``rate`` (see bench/paho_publisher.py)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.paho_publisher", "--port", str(port), "--rate", str(rate),
         "--seconds", str(seconds)],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
        cwd=Path(__file__).resolve().parents[1])
    cpu, sent_rate = out.stdout.split()
    return float(cpu), float(sent_rate)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer samples (< 3 minutes)")
    args = parser.parse_args()
    configure_logging("warning", "console")
    n = 2000 if args.quick else 10000
    results: dict[str, Any] = {"quick": args.quick, "samples": n}
    results.update(bench_framing(args.quick))
    print("framing done", flush=True)
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
        print("latency done", flush=True)
        results.update(bench_throughput(broker.port, n))
        print("throughput done", flush=True)
        command = bench_command(broker.port, max(200, n // 10))
        startup_ms = command.pop()
        results["command_latency_p50_ms"] = round(_pct(command, 0.5), 3)
        results["command_latency_p99_ms"] = round(_pct(command, 0.99), 3)
        results["startup_in_process_s"] = round(startup_ms / 1000, 3)
        seconds = 15.0 if args.quick else 60.0
        one = bench_process(broker.port, 1, 1000.0, seconds)
        results["startup_s"] = one["startup_s"]
        results["cpu_pct_line_rate_1_reader"] = one["cpu_pct"]
        results["rss_mb_1_reader"] = one["rss_mb"]
        base_cpu, base_rate = _paho_cpu(broker.port, 1000.0, seconds)
        results["baseline_paho_cpu_pct_line_rate"] = base_cpu
        results["baseline_paho_rate_msgs_s"] = base_rate
        results["cpu_vs_paho_line_rate"] = round(one["cpu_pct"] / base_cpu, 2)
        four = bench_process(broker.port, 4, 1000.0, seconds)
        results["cpu_pct_line_rate_4_readers"] = four["cpu_pct"]
        results["messages_s_1_reader"] = one["messages_s"]
        results["messages_s_4_readers"] = four["messages_s"]
        results["rss_mb_4_readers"] = four["rss_mb"]
        total = 100_000 if args.quick else 1_000_000
        growth = bench_process(broker.port, 1, 100_000.0, 0, count_messages=total)
        results["rss_growth_messages"] = growth["messages"]
        results["rss_growth_mb_1m"] = growth["rss_growth_mb"]
    finally:
        broker.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
