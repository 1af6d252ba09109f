"""Real Mosquitto brokers on free loopback ports, and an MQTT probe client.

Mosquitto missing is a failure, never a skip: scripts/test installs it.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """One mosquitto process; stop()/start() keep the same port (outage tests)."""

    def __init__(self, workdir: Path, *, tls: dict[str, Path] | None = None,
                 extra: str = "") -> None:
        if MOSQUITTO is None:
            pytest.fail("mosquitto is not installed: run ./scripts/test (it installs it with "
                        "apt-get) or `apt-get install mosquitto mosquitto-clients`")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = workdir
        self.tls = tls
        self.ca_file = tls["ca"] if tls else None
        self.log_path = workdir / "mosquitto.log"
        self.conf_path = workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                 "persistence false", f"log_dest file {self.log_path}", "log_type all",
                 "set_tcp_nodelay true"]
        if os.geteuid() == 0:
            # As root mosquitto drops to user "mosquitto", which cannot read pytest's tmp dir.
            lines.append("user root")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['server_cert']}",
                      f"keyfile {tls['server_key']}"]
        self.conf_path.write_text("\n".join(lines) + "\n" + extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not start on {self.port}:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    brokers: list[Broker] = []

    def make(*, start: bool = True, tls: dict[str, Path] | None = None,
             extra: str = "") -> Broker:
        workdir = tmp_path / f"broker{len(brokers)}"
        workdir.mkdir()
        broker = Broker(workdir, tls=tls, extra=extra)
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    return broker_factory()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.crt", "server.key",
                                                  "server.csr", "server.crt"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
             "-out", str(ca), "-days", "2", "-subj", "/CN=magtek-bridge test CA")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", "/CN=localhost")
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return {"ca": ca, "server_cert": cert, "server_key": key}


@pytest.fixture
def tls_broker(broker_factory: Callable[..., Broker], test_pki: dict[str, Path]) -> Broker:
    return broker_factory(tls=test_pki)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: Any


class MqttProbe:
    """A test client: subscribes, collects messages, waits with bounded timeouts."""

    def __init__(self, broker: Broker, topics: tuple[str, ...]) -> None:
        self.inbox: queue.Queue[Received] = queue.Queue()
        self._kept: list[Received] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"probe-{secrets.token_hex(4)}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        if broker.tls is not None:
            self.client.tls_set(ca_certs=str(broker.ca_file))
        subscribed = queue.Queue[int]()
        self.client.on_message = lambda c, u, m: self.inbox.put(
            Received(m.topic, bytes(m.payload), bool(m.retain), m.properties))
        self.client.on_subscribe = lambda c, u, mid, rc, p: subscribed.put(mid)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if topics:
            _, mid = self.client.subscribe([(t, 1) for t in topics])
            assert subscribed.get(timeout=5) == mid

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                properties: Any = None) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(5)

    def wait_for(self, match: str | Callable[[Received], bool], timeout: float = 5.0) -> Received:
        """The first message (in arrival order) that matches.

        Messages skipped on the way are dropped when they share the matched topic (they came
        before it) and kept for later calls when they are on other topics.
        """
        def test(m: Received) -> bool:
            return m.topic == match if isinstance(match, str) else bool(match(m))

        skipped: list[Received] = []
        deadline = time.monotonic() + timeout
        while True:
            if self._kept:
                message = self._kept.pop(0)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._kept = skipped + self._kept
                    got = [f"{m.topic}={m.payload[:40]!r}" for m in skipped[-20:]]
                    raise AssertionError(f"nothing matched within {timeout} s; got {got}")
                try:
                    message = self.inbox.get(timeout=remaining)
                except queue.Empty:
                    continue
            if test(message):
                self._kept = [m for m in skipped if m.topic != message.topic] + self._kept
                return message
            skipped.append(message)

    def expect_retained(self, topic: str, payload: bytes, timeout: float = 5.0) -> Received:
        """The latest state of a retained topic becomes ``payload`` (live or from storage)."""
        return self.wait_for(lambda m: m.topic == topic and m.payload == payload, timeout)

    def drain(self) -> None:
        self._kept.clear()
        while not self.inbox.empty():
            self.inbox.get_nowait()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def probe_factory(broker_factory: Callable[..., Broker], request: pytest.FixtureRequest
                  ) -> Iterator[Callable[..., MqttProbe]]:
    probes: list[MqttProbe] = []

    def make(*topics: str, broker: Broker | None = None) -> MqttProbe:
        target = broker if broker is not None else request.getfixturevalue("broker")
        probe = MqttProbe(target, topics)
        probes.append(probe)
        return probe

    yield make
    for probe in probes:
        probe.close()
