"""What an operator meets: loud failures, monitor's contract, errors that name the culprit.

The tools run as subprocesses of the installed ``magtek-bridge`` script (as an operator runs
them); the bridge's own logging is checked in process with its JSON log lines.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.app import ABSENT_REPEAT, BridgeApp
from bridge.logs import configure_logging
from bridge.metrics import Metrics
from bridge.mms import commands
from bridge.mqtt.link import LinkOptions, MqttLink
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import REPO, bridge_settings, running_bridge, wait_until
from tests.integration.support import free_port

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "magtek-bridge"
ROOT = "MagTek/Device/DynaFlexII/B123456"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGTEK_BRIDGE_")}
    env.update(extra)
    return env


def _cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], cwd=REPO, env=_env(**env), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_monitor_fails_at_the_first_refused_connect():
    closed = free_port()
    result = _cli("monitor", "--host", "127.0.0.1", "--port", str(closed), "--duration", "3")
    assert result.returncode == 1
    assert f"127.0.0.1:{closed}" in result.stderr and "Connection refused" in result.stderr
    assert "no answer within" not in result.stderr  # it did not wait out a timeout
    assert result.stdout == ""


def test_monitor_duration_subscription_and_quiet_output(broker, probe_factory):
    # --duration ends it by itself with nothing to print.
    quiet = _cli("monitor", "--host", broker.host, "--port", str(broker.port),
                 "--duration", "2")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""

    # -v says when the subscription is in place; a message published right then is printed.
    proc = subprocess.Popen(
        [str(SCRIPT), "monitor", "-v", "--count", "1", "--duration", "60", "--host",
         broker.host, "--port", str(broker.port)],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not any("subscribed to" in line for line in lines):
            line = proc.stderr.readline()
            assert line, f"monitor ended before subscribing: {lines}"
            lines.append(line)
        probe = probe_factory()
        probe.publish(f"{ROOT}/MMSMessage",
                      commands.get_serial_number().hex().upper().encode())
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert out.startswith(f"{ROOT}: ") and "D101" in out and out.count("\n") == 1


def test_metrics_port_in_use_is_named(broker):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli("run", "--simulate", "1", MAGTEK_BRIDGE_MQTT__HOST=broker.host,
                      MAGTEK_BRIDGE_MQTT__PORT=str(broker.port),
                      MAGTEK_BRIDGE_METRICS__PORT=str(port))
    assert result.returncode == 2, result.stderr
    assert "metrics.port" in result.stderr and f"127.0.0.1:{port}" in result.stderr
    assert "in use" in result.stderr and "MAGTEK_BRIDGE_METRICS__PORT" in result.stderr


def test_run_warns_about_unknown_variables_and_names_a_bad_one(broker, tmp_path):
    env = _env(MAGTEK_BRIDGE_MQTT__HOST=broker.host, MAGTEK_BRIDGE_MQTT__PORT=str(broker.port),
               MAGTEK_BRIDGE_METRICS__ENABLED="false", MAGTEK_BRIDGE_MQTT_PORT="1884",
               MAGTEK_BRIDGE_LOGGING__FORMAT="json")
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([str(SCRIPT), "run", "--simulate", "1"], cwd=REPO, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        def warned() -> bool:
            return any(e.get("event") == "unknown_environment_variable"
                       for e in _json_lines(log.read_text()))
        assert wait_until(warned, 60, 0.1), log.read_text()
        event = next(e for e in _json_lines(log.read_text())
                     if e.get("event") == "unknown_environment_variable")
        assert event["variable"] == "MAGTEK_BRIDGE_MQTT_PORT" and event["level"] == "warning"
        assert "MAGTEK_BRIDGE_MQTT__PORT" in str(event["hint"])
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    bad = _cli("run", "--simulate", "1", MAGTEK_BRIDGE_MQTT__PORT="0")
    assert bad.returncode == 2
    assert "mqtt.port" in bad.stderr and "MAGTEK_BRIDGE_MQTT__PORT='0'" in bad.stderr


def test_connect_failures_are_warned_once_then_throttled():
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    closed = free_port()
    link = MqttLink(LinkOptions(port=closed, reconnect_min_delay=0.5, reconnect_max_delay=0.5,
                                failure_log_interval=3600), client_id="throttle-test")
    link.start()
    try:
        def failed_events() -> list[dict[str, object]]:
            return [e for e in _json_lines(stream.getvalue())
                    if e.get("event") == "mqtt_connect_failed"]
        assert wait_until(lambda: len(failed_events()) >= 3, 60, 0.1)
    finally:
        link.stop()
    events = failed_events()
    warnings = [e for e in events if e["level"] == "warning"]
    assert len(warnings) == 1, events
    assert warnings[0]["failed_attempts"] == 1 and warnings[0]["port"] == closed
    assert "connection refused" in str(warnings[0]["reason"])
    assert all(e["level"] == "debug" for e in events[1:])

    # With no throttle interval every failure is a warning (the interval is what throttles).
    stream.seek(0)
    stream.truncate()
    link = MqttLink(LinkOptions(port=closed, reconnect_min_delay=0.5, reconnect_max_delay=0.5,
                                failure_log_interval=0), client_id="throttle-test-2")
    link.start()
    try:
        assert wait_until(lambda: len(failed_events()) >= 2, 60, 0.1)
    finally:
        link.stop()
    assert {e["level"] for e in failed_events()} == {"warning"}


def test_no_reader_is_warned_after_the_grace_period_and_repeated(broker):
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    settings = bridge_settings(broker, readers={"absent_warning": 5})
    app = BridgeApp(settings, backend=SimulatedBus(count=0),
                    metrics=Metrics(CollectorRegistry()))
    t0 = time.monotonic()

    def warnings() -> int:
        return sum(e.get("event") == "no_reader_attached" for e in _json_lines(stream.getvalue()))
    app.check_readers(now=t0 + 1)
    assert warnings() == 0  # within the grace period
    app.check_readers(now=t0 + 6)
    assert warnings() == 1
    app.check_readers(now=t0 + 60)
    assert warnings() == 1  # throttled
    app.check_readers(now=t0 + 7 + ABSENT_REPEAT)
    assert warnings() == 2
    event = next(e for e in _json_lines(stream.getvalue()) if e["event"] == "no_reader_attached")
    assert "udev" in str(event["hint"]) and event["backend"] == "simulated"


def test_readyz_says_no_readers_apart_from_ready(broker):
    bus = SimulatedBus(count=0)
    with running_bridge(broker, bus=bus) as (app, _):
        assert app.link.wait_ready(20)
        ready, details = app.readiness()
        assert not ready and details["state"] == "no_readers", details
        assert any("no readers" in str(r) for r in details["reasons"])  # type: ignore[attr-defined]
    with running_bridge(broker, bus=SimulatedBus(count=1, auto_present=None)) as (app, _):
        assert wait_until(lambda: app.readiness()[0], 20, 0.1), app.readiness()
        assert app.readiness()[1]["state"] == "ready"
    broker.stop()
    with running_bridge(broker, bus=SimulatedBus(count=1, auto_present=None)) as (app, _):
        assert wait_until(lambda: bool(app.link.last_error), 20, 0.1)
        ready, details = app.readiness()
        assert not ready and details["state"] == "not_ready"
