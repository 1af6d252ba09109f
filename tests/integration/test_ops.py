"""Operations: metrics and health over HTTP, systemd notify/watchdog, unit and image files."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml  # amqtt depends on PyYAML, so the dev extra installs it

from bridge.app import BridgeApp
from bridge.mms import commands
from bridge.sdnotify import SystemdNotifier
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import REPO, bridge_settings, running_bridge, wait_until

pytestmark = pytest.mark.integration
ROOT = "MagTek/Device/DynaFlexII/B123456"


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _sample(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (r"\{" + labels + r"[^}]*\}" if labels else r"(\{[^}]*\})?")
    total = 0.0
    for match in re.finditer(r"^" + pattern + r" ([0-9.e+-]+)$", text, re.M):
        total += float(match.group(match.lastindex or 1))
    return total


def test_metrics_move_and_readyz_follows_the_broker(broker, probe_factory):
    with running_bridge(broker, metrics={"enabled": True, "port": 0},
                        readers={"expected": ["B123456"]},
                        bus=SimulatedBus(count=1, auto_present=None)) as (app, _bus):
        assert app.ops is not None
        port = app.ops.port
        probe = probe_factory(f"{ROOT}/MMSMessage", f"{ROOT}/Status", f"{ROOT}/Error")
        probe.expect_retained(f"{ROOT}/Status", b"connected", timeout=10)
        assert wait_until(lambda: _get(port, "/readyz")[0] == 200, 5)
        for ref in (1, 2, 3):
            probe.publish(f"{ROOT}/SendCommand", commands.get_serial_number(ref).hex().encode())
            probe.wait_for(f"{ROOT}/MMSMessage", timeout=5)
        probe.publish(f"{ROOT}/SendCommand", b"zz")
        probe.wait_for(f"{ROOT}/Error", timeout=5)
        status, text = _get(port, "/metrics")
        assert status == 200
        assert _sample(text, "magtek_bridge_commands_total", 'outcome="accepted"') == 3
        assert _sample(text, "magtek_bridge_commands_total",
                       'outcome="rejected",reason="not_hex"') == 1
        assert _sample(text, "magtek_bridge_command_latency_seconds_count") == 3
        assert _sample(text, "magtek_bridge_reader_connected", 'serial="B123456"') == 1
        # identification (serial + firmware) plus our three commands, each one report
        assert _sample(text, "magtek_bridge_hid_reports_total", 'direction="out"') == 5
        assert _sample(text, "magtek_bridge_mms_messages_total",
                       'direction="in",type="device_response"') >= 3
        assert "process_resident_memory_bytes" in text
        assert _get(port, "/healthz")[0] == 200

        broker.stop()
        assert wait_until(lambda: _get(port, "/readyz")[0] == 503, 10)
        body = json.loads(_get(port, "/readyz")[1])
        assert body["status"] == "fail" and body["reasons"]
        broker.start()
        assert wait_until(lambda: _get(port, "/readyz")[0] == 200, 20)


def test_systemd_ready_watchdog_stopping_and_stuck_loop(broker, monkeypatch, tmp_path):
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr("bridge.health.STUCK_AFTER", 0.5)
    release = threading.Event()
    stop = threading.Event()
    bus = SimulatedBus(count=1, auto_present=None)
    app = BridgeApp(bridge_settings(broker), backend=bus)
    runner = threading.Thread(target=app.run, args=(stop, SystemdNotifier({"NOTIFY_SOCKET": path})))
    runner.start()
    try:
        assert server.recv(256).startswith(b"READY=1")
        pings = [server.recv(64) for _ in range(3)]
        assert pings == [b"WATCHDOG=1"] * 3
        # Stick the reader loop: its next read never returns.
        reader = bus.readers[0]
        original = reader.next_device_report
        monkeypatch.setattr(reader, "next_device_report",
                            lambda timeout, generation=None: release.wait(30) and None)
        assert wait_until(lambda: not app.liveness()[0], 5)
        # Drain pings already on their way, then none may come while stuck.
        server.settimeout(0.3)
        for _ in range(5):
            try:
                server.recv(64)
            except TimeoutError:
                break
        server.settimeout(1.5)
        with pytest.raises(TimeoutError):
            server.recv(64)
        monkeypatch.setattr(reader, "next_device_report", original)
        release.set()
    finally:
        release.set()
        stop.set()
        server.settimeout(10)
        messages = []
        while True:
            data = server.recv(256)
            messages.append(data)
            if data == b"STOPPING=1":
                break
        runner.join(20)
        server.close()
    assert messages[-1] == b"STOPPING=1"


def test_systemd_unit_verifies_and_scores(tmp_path):
    unit = REPO / "systemd" / "magtek-bridge.service"
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                            capture_output=True, text=True, timeout=60, check=False)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    print(f"systemd-analyze security exposure: {score.group(1)}")
    assert float(score.group(1)) <= 2.5
    # verify: the ExecStart binary does not exist here, so point it at a real one.
    copy = tmp_path / "magtek-bridge.service"
    copy.write_text(unit.read_text().replace(
        "/opt/magtek-bridge/venv/bin/magtek-bridge", shutil.which("true") or "/bin/true"))
    verify = subprocess.run(["systemd-analyze", "verify", str(copy)],
                            capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in verify.stderr.splitlines() if "magtek-bridge.service" in line]
    assert verify.returncode == 0 and not problems, verify.stderr


def test_dockerfile_and_compose_parse():
    dockerfile = (REPO / "Dockerfile").read_text()
    instructions = [line.split()[0] for line in dockerfile.splitlines()
                    if line.strip() and not line.startswith(("#", " "))]
    # FROM first, after the build arguments it uses (BASE_IMAGE).
    assert set(instructions[:instructions.index("FROM")]) <= {"ARG"}
    assert {"USER", "HEALTHCHECK", "ENTRYPOINT", "CMD"} <= set(instructions)
    assert re.search(r'^ENTRYPOINT \["magtek-bridge"\]$', dockerfile, re.M)
    assert re.search(r'^CMD \["run"\]$', dockerfile, re.M)  # the command the tests run
    # The health check asks /healthz on the configured metrics port, not a fixed one.
    assert re.search(r'^  CMD \["magtek-bridge", "health"\]$', dockerfile, re.M)
    assert "9108/healthz" not in dockerfile
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"mosquitto", "bridge", "prometheus", "grafana"}
    assert compose["services"]["bridge"]["command"][0] == "run"
    named = set(compose.get("volumes") or {})
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            # A bind mount must exist in the repo; anything else must be a declared volume.
            assert (REPO / source).exists() if "/" in source else source in named, source
    assert "bridge-state:/var/lib/magtek-bridge" in compose["services"]["bridge"]["volumes"]
    assert "STATE_DIRECTORY=/var/lib/magtek-bridge" in dockerfile
    tomllib.loads((REPO / "pyproject.toml").read_text())
    assert Path(REPO / "deploy" / "compose" / "prometheus.yml").exists()
