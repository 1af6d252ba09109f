"""Attacks on a real bridge process: a SendCommand flood, 1,000 idle HTTP connections,
signals in quick succession, settings that would send secrets in clear (issue 16)."""

from __future__ import annotations

import http.client
import json
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import structlog

from bridge.config import MqttSettings, plaintext_password
from bridge.mqtt.link import LinkOptions, MqttLink
from tests.integration.harness import REPO, BridgeProcess, bridge_process, wait_until
from tests.integration.support.consumer import DurableConsumer

pytestmark = pytest.mark.integration

ROOT = "MagTek/Device/DynaFlexII/B123456"
IDLE_CONNECTIONS = 1000


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads")


def _ops_port(proc: BridgeProcess) -> int:
    def port() -> int | None:
        for line in proc.log_text().splitlines():
            if '"ops_http_listening"' in line:
                return int(json.loads(line)["port"])
        return None

    assert wait_until(lambda: port() is not None, 20), proc.log_text()[-2000:]
    found = port()
    assert found is not None
    return found


def _get(port: int, path: str, timeout: float) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _env(**extra: str) -> dict[str, str]:
    return {"MAGTEK_BRIDGE_READERS__SIMULATE": "1", "MAGTEK_BRIDGE_LOGGING__FORMAT": "json",
            "MAGTEK_BRIDGE_METRICS__ENABLED": "true", "MAGTEK_BRIDGE_METRICS__PORT": "0",
            **extra}


@pytest.mark.parametrize("qos", [1, 0])
def test_a_command_flood_costs_no_device_message(broker_factory, probe_factory, tmp_path, qos):
    broker = broker_factory(extra="max_queued_messages 100000\n")
    consumer = DurableConsumer(broker.host, broker.port, f"{ROOT}/MMSMessage")
    watch = probe_factory(f"{ROOT}/Status", f"{ROOT}/Error", broker=broker)
    try:
        env = _env(MAGTEK_BRIDGE_READERS__SIMULATE_STREAM_RATE="200")
        with bridge_process(broker, tmp_path, env=env) as proc:
            watch.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"connected",
                           timeout=20)
            port = _ops_port(proc)
            assert consumer.wait_for_count(50, 20), proc.log_text()[-2000:]
            pid = proc.proc.pid
            before = _rss_mb(pid)
            flood = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.support.flooder", broker.host,
                 str(broker.port), f"{ROOT}/SendCommand", "10000", "6", str(qos)],
                cwd=REPO, stdout=subprocess.PIPE, text=True)
            peak = before
            while flood.poll() is None:
                peak = max(peak, _rss_mb(pid))
                time.sleep(0.1)
            published = int(flood.communicate(timeout=30)[0])
            settle = time.monotonic() + 3
            while time.monotonic() < settle:  # after the flood: still bounded?
                peak = max(peak, _rss_mb(pid))
                time.sleep(0.1)
            status, body = _get(port, "/metrics", timeout=10)
            assert status == 200
            metrics = body.decode()
            seen = watch.drain()
            proc.signal(signal.SIGTERM)
            assert proc.wait(30) == 0, proc.log_text()[-3000:]
            log = proc.log_text()
        # Everything the bridge published, after it drained on SIGTERM.
        wait_until(lambda: False, 2)
        unique = consumer.unique()
        boot = unique[0].boot_id
        seqs = [d.seq for d in unique if d.boot_id == boot]
        numbers = [d.number for d in unique if d.boot_id == boot]
        assert seqs == list(range(1, len(seqs) + 1)), "a device message was lost (seq gap)"
        assert numbers == list(range(1, len(numbers) + 1)), "a device message was lost"
        assert _metric(metrics, "magtek_bridge_outbox_dropped_total") == 0
        assert "outbox_not_drained" not in log
        statuses = [m.payload for m in seen if m.topic == f"{ROOT}/Status"]
        assert b"disconnected" not in statuses, "the reader's session was dropped"
        rejected = _metric(metrics, "magtek_bridge_commands_total", outcome="rejected")
        limited = _metric(metrics, "magtek_bridge_commands_total", reason="rate_limited")
        assert limited > 1000, (published, rejected)  # it was a flood, refused cheaply
        errors = [m for m in seen if m.topic == f"{ROOT}/Error"]
        # Reports coalesced: a few in full, then about one a second (6 s flood + 3 s after).
        assert 1 <= len(errors) <= 5 + 12, len(errors)
        summarised = sum(json.loads(m.payload).get("suppressed", 0)
                         + json.loads(m.payload).get("count", 0) for m in errors)
        rejected_lines = log.count('"command_rejected"')
        assert rejected_lines <= 5 + 12 + 5, rejected_lines
        growth = peak - before
        print(f"\n[flood] qos={qos} published={published} rejected={rejected:.0f} "
              f"rate_limited={limited:.0f} error_reports={len(errors)} "
              f"(standing for {summarised + len(errors)}) log_lines={rejected_lines} "
              f"device_messages={len(numbers)} lost=0 rss_before={before:.1f}MB "
              f"peak={peak:.1f}MB growth={growth:.1f}MB")
        assert growth < 30, f"RSS grew {growth:.1f} MB during the flood"
    finally:
        consumer.close()


def _raise_own_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed, (
        f"this test needs {needed} open files (hard limit {hard})")


def _idle(port: int) -> socket.socket | None:
    sock = socket.socket()
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    except OSError:
        sock.close()
        return None
    return sock


def test_ops_http_answers_while_a_thousand_idle_connections_are_held(broker, tmp_path):
    _raise_own_fd_limit(IDLE_CONNECTIONS + 200)
    held: list[socket.socket] = []
    with bridge_process(broker, tmp_path, env=_env()) as proc:
        port = _ops_port(proc)
        pid = proc.proc.pid
        try:
            for _ in range(IDLE_CONNECTIONS):
                sock = _idle(port)
                if sock is not None:
                    held.append(sock)
            # The endpoints answer within 2 s each, again and again, while the idle clients
            # keep coming back.
            for round_ in range(3):
                for path in ("/metrics", "/healthz", "/readyz"):
                    status, body = _get(port, path, timeout=2.0)
                    assert status in (200, 503) and body, (path, status)
                for index, sock in enumerate(held):  # reconnect the ones we were cut off
                    if round_ and _closed(sock):
                        sock.close()
                        replacement = _idle(port)
                        if replacement is not None:
                            held[index] = replacement
            # Concurrent scrapes succeed too.
            results: list[int] = []

            def scrape() -> None:
                try:
                    results.append(_get(port, "/metrics", timeout=10)[0])
                except OSError:
                    results.append(0)

            scrapers = [threading.Thread(target=scrape) for _ in range(40)]
            for thread in scrapers:
                thread.start()
            for thread in scrapers:
                thread.join(30)
            assert results.count(200) == 40, results
            threads = _threads(pid)
            fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
            assert threads < 40, threads  # no thread per connection
            assert fds < 200, fds  # the connection cap holds, whatever clients open
            status, body = _get(port, "/metrics", timeout=5)
            dropped = _metric(body.decode(), "magtek_bridge_ops_http_dropped_connections_total")
            assert dropped > 0
            print(f"\n[slowloris] idle={IDLE_CONNECTIONS} bridge threads={threads} fds={fds} "
                  f"dropped={dropped:.0f}")
        finally:
            for sock in held:
                sock.close()
        # A client that closes before reading its answer is not a traceback.
        for _ in range(20):
            sock = socket.socket()
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
            sock.close()
        assert _get(port, "/healthz", timeout=5)[0] in (200, 503)
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log = proc.log_text()
    assert "Traceback" not in log and "BrokenPipeError" not in log
    assert all(line.startswith("{") for line in log.splitlines() if line.strip()), log[-2000:]


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


@pytest.mark.parametrize("burst", [2, 25])
def test_signals_in_quick_succession_always_end_the_process(broker, tmp_path, burst):
    for attempt, delay in enumerate((0.0, 0.3, 1.0, 2.5)):
        run_dir = tmp_path / f"run{attempt}"
        run_dir.mkdir()
        with bridge_process(broker, run_dir, env=_env()) as proc:
            if delay:
                wait_until(lambda: "bridge_starting" in proc.log_text(), 20)
                time.sleep(delay)
            for index in range(burst):
                proc.signal(signal.SIGINT if index % 2 else signal.SIGTERM)
            code = proc.wait(20)  # it ends: wait() raises if it is still alive
            if delay:  # our handlers are in place once the bridge says it is starting
                assert code in (0, 1), (code, proc.log_text()[-2000:])
                assert "Traceback" not in proc.log_text()


def _run_cli(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.toml"
    path.write_text(config)
    return subprocess.run([sys.executable, "-m", "bridge", "run", "--config", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def test_settings_that_would_send_secrets_in_clear_exit_2(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    result = _run_cli(tmp_path, f'[mqtt.tls]\nca_file = "{ca}"\n')
    assert result.returncode == 2 and "mqtt.tls.ca_file" in result.stderr, result.stderr
    result = _run_cli(tmp_path, '[mqtt]\nhost = "192.0.2.10"\npassword = "hunter2"\n')
    assert result.returncode == 2 and "mqtt.password" in result.stderr, result.stderr
    assert "hunter2" not in result.stderr
    result = _run_cli(tmp_path, '[websocket]\nenabled = true\n[websocket.auth]\n'
                                'mode = "token"\ntoken = " "\n')
    assert result.returncode == 2 and "websocket.auth.token" in result.stderr, result.stderr


def test_allowed_clear_password_is_warned_at_every_connect(auth_broker):
    # Tests stay on loopback, so the link is told what the config decides for a remote host
    # (``plaintext_password``, unit-tested); here: the warning comes with every connection.
    settings_mqtt = MqttSettings(host="192.0.2.10", password="pw",
                                 allow_password_without_tls=True)
    assert plaintext_password(settings_mqtt)
    options = LinkOptions(host=auth_broker.host, port=auth_broker.port,
                          username=auth_broker.username, password=auth_broker.password,
                          reconnect_max_delay=1, password_in_clear=True)
    with structlog.testing.capture_logs() as events:
        link = MqttLink(options, client_id="clear-password-test", name="bridge")
        link.start()
        try:
            assert link.wait_ready(15)
            auth_broker.stop()
            assert wait_until(lambda: not link.connected.is_set(), 15)
            auth_broker.start()
            assert wait_until(lambda: link.generation >= 2, 30)
        finally:
            link.stop()
    warned = [e for e in events if e["event"] == "mqtt_password_sent_in_clear"]
    assert len(warned) == 2 and warned[0]["log_level"] == "warning"
    assert all("pw" not in json.dumps(e, default=str) for e in warned)
