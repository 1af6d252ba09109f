"""`python -m bench [--quick] [--runs N]`: the bridge against baselines, all in one run on one
broker, measured from outside the process under test. Writes bench/results/latest.json.

Every phase uses four processes: the broker; ``bench.feeder`` (the simulated readers: their
CPU is never counted); the publisher under test (the bridge through ``bench.sockets``, a bare
paho ``loop_start`` publisher, or the lean single-thread floor, all fed the same reports over
the same sockets and publishing the same payloads with the same pre-encoded properties; in the
mix also ``bench.lean_threads``, the lean floor split into the bridge's threads); and
``bench.subscriber``, the observer, which pairs every arrival with its own send through the
timestamp and counter inside the message. Lost (sent, never received), duplicate and stray
messages are counted, never paired around. CPU is the publisher process's own (/proc), over
a fixed window while the stream runs; ratios compare phases of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import (
    Mosquitto,
    percentile,
    proc_cpu_seconds,
    proc_status,
    topic_for,
)
from bridge.mms import MessageType, Reassembler, commands, packetize, parse_message

RESULTS = Path(__file__).parent / "results" / "latest.json"
SERIALS = ("B100001", "B100002", "B100003", "B100004")
WARM = 1.5  # seconds of stream before the CPU window opens
DRAIN = 2.0  # seconds after the stream for the last messages to arrive
MIX_PAIRS = 3  # bridge (spool) phases in the mix (spool) runs, each followed by a baseline one
_HERE = str(Path(__file__).resolve().parents[1])


class Proc:
    """A child process with line-wise stdout."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen([sys.executable, "-m", *args], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=sys.stderr, text=True,
                                      cwd=_HERE, env=env)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _pump(self) -> None:
        stdout: IO[str] = self.popen.stdout  # type: ignore[assignment]
        for line in stdout:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def expect(self, predicate: Any, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if predicate(line):
                        self.lines.remove(line)
                        return line
                if "<eof>" in self.lines:
                    raise RuntimeError(f"{self.popen.args} ended")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.popen.args}: timed out waiting")
                self._cond.wait(left)

    def say(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def finish(self, timeout: float = 30.0) -> None:
        """Close stdin and wait (the feeder and subscriber end on EOF)."""
        assert self.popen.stdin is not None
        self.popen.stdin.close()
        self.popen.wait(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def _bridge_env(port: int, host_id: str, spool: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGTEK_BRIDGE_")}
    env.update({"MAGTEK_BRIDGE_MQTT__PORT": str(port), "MAGTEK_BRIDGE_METRICS__ENABLED": "false",
                "MAGTEK_BRIDGE_LOGGING__LEVEL": "warning", "MAGTEK_BRIDGE_TOPICS__HOST_ID": host_id,
                "MAGTEK_BRIDGE_READERS__SCAN_INTERVAL": "0.2",
                "MAGTEK_BRIDGE_OUTBOX__SPOOL": "on" if spool else "off",
                # The command phase sends back to back to time the round trip, not the flood
                # policy (readers.command_rate, 50/s by default, would refuse most of them).
                "MAGTEK_BRIDGE_READERS__COMMAND_RATE": "100000",
                "MAGTEK_BRIDGE_READERS__COMMAND_BURST": "100000"})
    if spool is not None:
        env["MAGTEK_BRIDGE_OUTBOX__SPOOL_PATH"] = str(spool)
    return env


def phase(port: int, kind: str, readers: int, pattern: str, seconds: float,
          rate: float = 1000.0, spool: bool = False) -> dict[str, Any]:
    """One publisher, ``readers`` streams for ``seconds``: what arrived, when, at what CPU."""
    serials = SERIALS[:readers]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(Path(tmp) / f"{s}.sock") for s in serials]
        subscriber = Proc(["bench.subscriber", "--port", str(port)])
        feeder = Proc(["bench.feeder", "--dir", tmp, "--serials", ",".join(serials),
                       "--pattern", pattern, "--rate", str(rate),
                       "--seconds", str(WARM + seconds + 0.3)])
        publisher: Proc | None = None
        try:
            subscriber.expect(lambda line: line == "ready")
            feeder.expect(lambda line: line == "ready")
            if kind == "bridge":
                env = _bridge_env(port, f"bench-{readers}", Path(tmp) / "spool.db" if spool
                                  else None)
                publisher = Proc(["bench.sockets", *paths], env=env)
                for serial in serials:
                    subscriber.expect(lambda line, s=serial: line == f"status {s} connected")
            else:
                module = {"paho": "bench.paho_publisher", "lean": "bench.lean",
                          "lean_threads": "bench.lean_threads"}[kind]
                publisher = Proc([module, "--port", str(port), *paths])
                publisher.expect(lambda line: line == "ready")
            time.sleep(0.5)
            feeder.say("go")
            time.sleep(WARM)
            rss0 = proc_status(publisher.pid, "VmRSS")
            cpu0, t0 = proc_cpu_seconds(publisher.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = proc_cpu_seconds(publisher.pid), time.monotonic()
            threads = proc_status(publisher.pid, "Threads")
            rss1 = proc_status(publisher.pid, "VmRSS")
            sent = json.loads(feeder.expect(lambda line: line.startswith("{"),
                                            timeout=WARM + seconds + 60))["sent"]
            time.sleep(DRAIN)
        finally:
            if publisher is not None:
                publisher.kill()
            feeder.finish()
            subscriber.say("stop")
        seen = json.loads(subscriber.expect(lambda line: line.startswith("{"), timeout=120))
        subscriber.finish()
    latencies: list[float] = []
    delivered = duplicates = stray = 0
    for serial in serials:
        got = seen["readers"].get(serial, {"latency": {}, "duplicates": 0})
        wanted = sent.get(serial, 0)
        for counter, latency in got["latency"].items():
            if int(counter) < wanted:
                delivered += 1
                latencies.append(latency)
            else:
                stray += 1
        duplicates += got["duplicates"]
    total = sum(sent.values())
    return {"sent": total, "delivered": delivered, "lost": total - delivered,
            "duplicates": duplicates, "stray": stray + seen["stray"],
            "delivered_pct": round(100 * delivered / total, 2) if total else 0.0,
            "latency_p50_ms": round(percentile(latencies, 0.5), 3),
            "latency_p99_ms": round(percentile(latencies, 0.99), 3),
            "cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
            "threads": threads, "rss_mb": round(rss1 / 1024, 1),
            "rss_growth_mb": round((rss1 - rss0) / 1024, 2)}


def command_phase(port: int, count: int) -> dict[str, Any]:
    """SendCommand -> response on MMSMessage, timed at the requester (outside the bridge),
    each response paired with its command by the MMS reference (lost ones counted)."""
    serial = SERIALS[0]
    root = topic_for(serial).rsplit("/", 1)[0]
    responses: list[tuple[int, float]] = []
    cond = threading.Condition()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        now = time.monotonic()
        try:
            parsed = parse_message(bytes.fromhex(message.payload.decode()))
        except ValueError:
            return
        if parsed.message_type == MessageType.DEVICE_RESPONSE:
            with cond:
                responses.append((parsed.ref, now))
                cond.notify_all()

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / f"{serial}.sock")
        feeder = Proc(["bench.feeder", "--dir", tmp, "--serials", serial])
        subscriber = Proc(["bench.subscriber", "--port", str(port)])
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        # Without TCP_NODELAY each small command waits for a delayed ACK (~40 ms).
        client.on_socket_open = lambda c, u, s: s.setsockopt(socket.IPPROTO_TCP,
                                                             socket.TCP_NODELAY, 1)
        client.on_message = on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.subscribe(f"{root}/MMSMessage", 1)
        bridge: Proc | None = None
        latencies: list[float] = []
        lost = 0
        try:
            feeder.expect(lambda line: line == "ready")
            subscriber.expect(lambda line: line == "ready")
            started = time.monotonic()
            bridge = Proc(["bench.sockets", path], env=_bridge_env(port, "bench-cmd", None))
            subscriber.expect(lambda line: line == f"status {serial} connected")
            startup = time.monotonic() - started
            time.sleep(0.5)
            for index in range(count):
                ref = index % 256
                with cond:
                    responses.clear()
                t0 = time.monotonic()
                client.publish(f"{root}/SendCommand", commands.get_serial_number(ref).hex(),
                               qos=1)
                with cond:
                    if cond.wait_for(lambda r=ref: any(x == r for x, _ in responses), 5.0):
                        arrived = next(t for x, t in responses if x == ref)
                        latencies.append((arrived - t0) * 1000)
                    else:
                        lost += 1
        finally:
            if bridge is not None:
                bridge.kill()
            client.loop_stop()
            client.disconnect()
            feeder.finish()
            subscriber.finish()
    return {"command_p50_ms": round(percentile(latencies, 0.5), 3),
            "command_p99_ms": round(percentile(latencies, 0.99), 3),
            "commands_lost": lost, "startup_s": round(startup, 3)}


def framing(quick: bool) -> dict[str, float]:
    out = {}
    for size in (64, 1024, 65536):
        message = (bytes(range(256)) * (size // 256 + 1))[:size]
        rounds = max(20, (2_000_000 if quick else 10_000_000) // size)
        start = time.perf_counter()
        reassembler = Reassembler()
        for _ in range(rounds):
            for report in packetize(message):
                reassembler.feed(report)
        out[f"framing_mb_s_{size}b"] = round(size * rounds / (time.perf_counter() - start) / 1e6,
                                             2)
    return out


def one_run(port: int, seconds: float, growth_seconds: float, commands_n: int) -> dict[str, Any]:
    r: dict[str, Any] = {}
    line: dict[str, dict[str, Any]] = {}
    for kind in ("paho", "lean", "bridge"):
        line[kind] = phase(port, kind, 1, "single", seconds)
        print(f"  line rate, {kind}: {line[kind]}", flush=True)
    # The spool, interleaved as the mix is: three spool phases (half the window each), each
    # followed by a plain one, each compared with the mean of the plain phases either side (the
    # first: the line-rate phase above). A phase that always ran second measured up to 10 %
    # more on this machine whatever it ran, and a single pair moved by as much between runs.
    half = seconds / 2
    plain = [line["bridge"]]
    spooled: list[dict[str, Any]] = []
    for _ in range(MIX_PAIRS):
        spooled.append(phase(port, "bridge", 1, "single", half, spool=True))
        plain.append(phase(port, "bridge", 1, "single", half))
    print(f"  line rate, bridge + spool: {[p['cpu_pct'] for p in spooled]}, without: "
          f"{[p['cpu_pct'] for p in plain]}", flush=True)
    # The mix, interleaved: lean, the lean floor in the bridge's thread layout, then three
    # bridge phases each followed by a lean one (half the window each). Every bridge phase is
    # compared with the mean of the lean phases either side of it, as the spool phase is, and
    # the run's ratio is the median of the three: one phase that a neighbour on this machine
    # slowed moves it less than it moved a single pair.
    mix_lean = [phase(port, "lean", 1, "mix", half)]
    mix_layout = phase(port, "lean_threads", 1, "mix", half)
    mix_bridge: list[dict[str, Any]] = []
    for _ in range(MIX_PAIRS):
        mix_bridge.append(phase(port, "bridge", 1, "mix", half))
        mix_lean.append(phase(port, "lean", 1, "mix", half))
    print(f"  mix: lean {[p['cpu_pct'] for p in mix_lean]}, layout {mix_layout['cpu_pct']}, "
          f"bridge {[p['cpu_pct'] for p in mix_bridge]}", flush=True)
    four = phase(port, "bridge", 4, "single", seconds)
    print(f"  4 readers: {four}", flush=True)
    cmd = command_phase(port, commands_n)
    print(f"  commands: {cmd}", flush=True)
    growth = phase(port, "bridge", 1, "single", growth_seconds)
    print(f"  memory growth: {growth}", flush=True)
    for kind, values in line.items():
        for key in ("cpu_pct", "latency_p50_ms", "latency_p99_ms", "delivered_pct", "lost",
                    "threads"):
            r[f"line_{kind}_{key}"] = values[key]
    r["line_bridge_duplicates"] = line["bridge"]["duplicates"]
    r["line_bridge_stray"] = line["bridge"]["stray"]
    r["cpu_bridge_vs_paho"] = round(line["bridge"]["cpu_pct"] / line["paho"]["cpu_pct"], 3)
    r["cpu_bridge_vs_lean"] = round(line["bridge"]["cpu_pct"] / line["lean"]["cpu_pct"], 3)
    r["added_latency_p50_ms"] = round(line["bridge"]["latency_p50_ms"]
                                      - line["paho"]["latency_p50_ms"], 3)
    r["added_latency_p99_ms"] = round(line["bridge"]["latency_p99_ms"]
                                      - line["paho"]["latency_p99_ms"], 3)
    plain_cpu = [p["cpu_pct"] for p in plain]
    spool_cpu = [p["cpu_pct"] for p in spooled]
    r["spool_cpu_pct"] = round(statistics.median(spool_cpu), 2)
    r["spool_lost"] = sum(p["lost"] for p in spooled)
    r["spool_plain_cpu_pct"] = round(statistics.median(plain_cpu), 2)
    r["spool_cost_ratio"] = round(statistics.median(
        cpu / ((plain_cpu[i] + plain_cpu[i + 1]) / 2) for i, cpu in enumerate(spool_cpu)), 3)
    lean_cpu = [p["cpu_pct"] for p in mix_lean]
    bridge_cpu = [p["cpu_pct"] for p in mix_bridge]
    bracketed = [cpu / ((lean_cpu[i] + lean_cpu[i + 1]) / 2) for i, cpu in enumerate(bridge_cpu)]
    bridge = statistics.median(bridge_cpu)
    r["mix_lean_cpu_pct"] = round(statistics.median(lean_cpu), 2)
    r["mix_lean_threads_cpu_pct"] = mix_layout["cpu_pct"]
    r["mix_bridge_cpu_pct"] = round(bridge, 2)
    r["mix_bridge_lost"] = sum(p["lost"] for p in mix_bridge)
    r["mix_bridge_vs_lean"] = round(statistics.median(bracketed), 3)
    r["mix_layout_vs_lean"] = round(mix_layout["cpu_pct"] / ((lean_cpu[0] + lean_cpu[1]) / 2), 3)
    r["mix_bridge_vs_layout"] = round(bridge / mix_layout["cpu_pct"], 3)
    r["four_readers_sent"] = four["sent"]
    r["four_readers_delivered_pct"] = four["delivered_pct"]
    r["four_readers_lost"] = four["lost"]
    r["four_readers_cpu_pct"] = four["cpu_pct"]
    r["four_readers_threads"] = four["threads"]
    r["four_readers_latency_p99_ms"] = four["latency_p99_ms"]
    r.update(cmd)
    r["growth_messages"] = growth["sent"]
    r["growth_lost"] = growth["lost"]
    r["growth_rss_mb"] = growth["rss_mb"]
    r["growth_rss_growth_mb"] = growth["rss_growth_mb"]
    return r


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="one short run (about 2 minutes)")
    parser.add_argument("--runs", type=int, default=None, help="full runs (default 3)")
    parser.add_argument("--seconds", type=float, default=None, help="CPU window per phase")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    growth_seconds = 10.0 if args.quick else 120.0
    commands_n = 200 if args.quick else 1000
    results: dict[str, Any] = {"quick": args.quick, "runs": runs, "seconds": seconds,
                               "growth_seconds": growth_seconds,
                               "reader_cpu": "excluded: simulated readers run in bench.feeder",
                               "mix_method": f"interleaved: {MIX_PAIRS} bridge phases of half the "
                                             "window, each against the mean of the lean phases "
                                             f"either side; median of the {MIX_PAIRS}",
                               "spool_method": f"interleaved: {MIX_PAIRS} spool phases of half the "
                                               "window, each against the mean of the plain "
                                               f"phases either side; median of the {MIX_PAIRS}"}
    results.update(framing(args.quick))
    broker = Mosquitto()
    per_run: list[dict[str, Any]] = []
    try:
        for index in range(runs):
            print(f"run {index + 1} of {runs}", flush=True)
            per_run.append(one_run(broker.port, seconds, growth_seconds, commands_n))
    finally:
        broker.stop()
    results["per_run"] = per_run
    summary: dict[str, Any] = {}
    for key in per_run[0]:
        values = [run[key] for run in per_run]
        summary[key] = {"median": statistics.median(values), "min": min(values),
                        "max": max(values)}
    results["summary"] = summary
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(k) for k in summary)
    print(f"{'measure':<{width}}  median (min - max over {runs} run(s))")
    for key, value in summary.items():
        print(f"{key:<{width}}  {value['median']} ({value['min']} - {value['max']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
