"""A payments-only bridge (``readers.enabled = false``): ``/readyz`` is ready once its MQTT
sessions are, not ``no_readers`` forever; a reader bridge keeps saying ``no_readers``.

Through the ops HTTP endpoint of a bridge started by the installed ``magtek-bridge`` script,
with the fake MPPG service and a real broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.app import BridgeApp
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.transport.simulated import SimulatedBus
from tests.fakes.mppg_fake import FakeMppg
from tests.integration.harness import REPO, bridge_settings, wait_until
from tests.integration.support import free_port

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "magtek-bridge"


@pytest.fixture
def fake_mppg() -> Iterator[FakeMppg]:
    with FakeMppg() as fake:
        yield fake


def _readyz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGTEK_BRIDGE_")}
    env.update(extra)
    return env


def test_a_payments_only_bridge_is_ready_without_readers(broker, fake_mppg, tmp_path):
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'[metrics]\nport = {port}\n'
        '[readers]\nenabled = false\n'
        f'[mppg]\nenabled = true\nbase_url = "{fake_mppg.base_url}"\n'
        f'username = "{fake_mppg.username}"\n')
    env = _env(MAGTEK_BRIDGE_CONFIG=str(config), MAGTEK_BRIDGE_MPPG__PASSWORD=fake_mppg.password,
               MAGTEK_BRIDGE_LOGGING__FORMAT="json")
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([str(SCRIPT), "run"], cwd=REPO, env=env, stdout=sink,
                                stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            try:
                return _readyz(port)[0] == 200
            except OSError:
                return False  # not listening yet

        assert wait_until(ready, 60, 0.2), (_readyz(port) if proc.poll() is None
                                            else log.read_text())
        details = _readyz(port)[1]
        assert details["state"] == "ready" and details["readers"] == [], details
        assert details["readers_enabled"] is False
        health = subprocess.run([str(SCRIPT), "health", "--ready"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert health.returncode == 0, (health.stdout, health.stderr)
        assert '"ready"' in health.stdout
        # It neither scans for readers nor warns that none is attached.
        assert "no_reader_attached" not in log.read_text()
        broker.stop()  # its broker gone: not ready, and not for want of a reader
        assert wait_until(lambda: _readyz(port)[0] == 503, 60, 0.2)
        assert _readyz(port)[1]["state"] == "not_ready"
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_reader_bridge_with_payments_still_wants_a_reader(broker, fake_mppg):
    port = free_port()
    settings = bridge_settings(
        broker, metrics={"enabled": True, "port": port},
        mppg={"enabled": True, "base_url": fake_mppg.base_url, "username": fake_mppg.username,
              "password": fake_mppg.password})
    app = BridgeApp(settings, backend=SimulatedBus(count=0),
                    metrics=Metrics(CollectorRegistry(), process_metrics=False))
    app.start()
    try:
        assert app.payments is not None and app.link.wait_ready(30)
        assert app.payments.link is not None and app.payments.link.wait_ready(30)
        status, details = _readyz(port)
        assert status == 503 and details["state"] == "no_readers", details
        assert "readers_enabled" not in details
    finally:
        app.stop()


def test_a_payments_only_bridge_has_no_reader_scan_to_be_stuck(broker, fake_mppg):
    settings = bridge_settings(
        broker, readers={"enabled": False},
        mppg={"enabled": True, "base_url": fake_mppg.base_url, "username": fake_mppg.username,
              "password": fake_mppg.password})
    app = BridgeApp(settings, metrics=Metrics(CollectorRegistry(), process_metrics=False))
    app.start()
    try:
        assert app.link.wait_ready(30)
        # No scan runs, so its heartbeat never moves: that is no stuck loop here.
        app.supervisor.heartbeat = time.monotonic() - 3600
        assert "reader-scan" not in app.liveness()[1]["stuck"]  # type: ignore[operator]
        assert app.supervisor.sessions() == []
    finally:
        app.stop()


@pytest.mark.parametrize(("sections", "key"), [
    ({"readers": {"enabled": False}}, "readers.enabled"),
    ({"readers": {"enabled": False, "expected": ["B123456"]}, "mppg": {}}, "readers.expected"),
])
def test_readers_off_needs_payments_and_no_expected_reader(broker, fake_mppg, sections, key):
    if "mppg" in sections:
        sections["mppg"] = {"enabled": True, "base_url": fake_mppg.base_url,
                            "username": fake_mppg.username, "password": fake_mppg.password}
    with pytest.raises(ConfigError, match=key):
        bridge_settings(broker, **sections)
