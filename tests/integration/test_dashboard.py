"""dashboards/magtek-bridge.json against a real Prometheus scraping a running bridge.

A bridge (simulated reader, real Mosquitto, the MPPG fake so the payment metrics exist) gets
some traffic; Prometheus (the Debian package, on a free loopback port) scrapes it every
second; then every PromQL expression of every panel is evaluated through Prometheus' HTTP API
with the dashboard's ``$instance`` variable at its "All" value, and each must return data. A
panel whose metric is misspelt, renamed or never exported fails here instead of staying empty
on a store's screen. A second bridge is scraped too: no query may merge bridges under "All"
(each series names its instance), and the command-latency quantiles come one per bridge.
A quantile must keep ``le`` in its grouping, ``sum by (instance, le)``: grouped ``by
(instance)`` alone, or taken from the histogram's name without ``_bucket``, it returns no
series at all (both checked against this Prometheus).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from bridge.mms import commands
from bridge.transport.simulated import SimulatedBus
from tests.fakes.mppg_fake import FakeMppg
from tests.integration.harness import REPO, running_bridge, wait_until
from tests.integration.support import free_port

pytestmark = pytest.mark.integration

DASHBOARD = REPO / "dashboards/magtek-bridge.json"
ROOT = "MagTek/Device/DynaFlexII/B123456"
PAYMENTS = "MagTek/Bridge/testhost/PaymentRequest"
OTHER_SERIAL = "B654321"
OTHER_ROOT = f"MagTek/Device/DynaFlexII/{OTHER_SERIAL}"


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expr) for every query target in the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))  # rows may nest panels
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
    walk(board["panels"])
    return found


def _instance_all_value() -> str:
    board = json.loads(DASHBOARD.read_text())
    variable = next(v for v in board["templating"]["list"] if v["name"] == "instance")
    assert variable["includeAll"]
    return str(variable["allValue"])


def _api(port: int, path: str, **params: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """(config file to write scrape targets into, web port); started by ``start``."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: apt-get install prometheus (./scripts/test does)")
    port = free_port()
    yield tmp_path / "prometheus.yml", port


def _start_prometheus(config: Path, port: int, targets: list[str],
                      tmp: Path) -> subprocess.Popen[bytes]:
    listed = ", ".join(f"'{target}'" for target in targets)
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: magtek-bridge\n    static_configs:\n"
        f"      - targets: [{listed}]\n")
    with (tmp / "prometheus.log").open("wb") as log:
        return subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)


def _websocket_traffic(app: Any) -> None:
    """A WebSocket client's command, a refused frame, and a refused connection."""
    assert app.websocket is not None and app.websocket.port is not None
    base = f"ws://127.0.0.1:{app.websocket.port}"
    # JSON frames asked for: a plain (MagTek) client gets MMS hex only, refusals included.
    with connect(f"{base}/?frames=json", open_timeout=10) as client:
        client.send(commands.get_serial_number(0x21).hex())
        client.send("zz")
        # The status frame (on connect), the response and the error frame, in an order the
        # test does not rely on: read until the refusal (a missing one times out).
        frames = [str(client.recv(timeout=10))]
        while "not_hex" not in frames[-1] and len(frames) < 10:
            frames.append(str(client.recv(timeout=10)))
        assert "not_hex" in frames[-1], frames
    with connect(f"{base}/No/Such/Reader?frames=json", open_timeout=10) as client:
        assert "unknown_reader" in str(client.recv(timeout=10))


def test_every_dashboard_query_returns_data(broker, probe_factory, prometheus, tmp_path):
    """... and keeps bridges apart: with two bridges scraped (the fleet's "All"), every series
    a query returns names its instance, and the command-latency quantiles come per bridge
    (one merged quantile hid a slow store behind a fast one)."""
    expressions = dashboard_expressions()
    assert len(expressions) >= 20
    config, prom_port = prometheus
    with FakeMppg() as fake, running_bridge(
            broker, bus=SimulatedBus(count=1, auto_present=None),
            metrics={"enabled": True, "port": 0},
            websocket={"enabled": True, "address": "127.0.0.1", "port": 0},
            mppg={"enabled": True, "base_url": fake.base_url, "username": fake.username,
                  "password": fake.password}) as (app, _bus), running_bridge(
            broker, bus=SimulatedBus(count=1, serials=[OTHER_SERIAL], auto_present=None),
            metrics={"enabled": True, "port": 0},
            topics={"host_id": "otherhost"}) as (other, _other_bus):
        assert app.ops is not None and other.ops is not None
        target = f"127.0.0.1:{app.ops.port}"
        other_target = f"127.0.0.1:{other.ops.port}"
        probe = probe_factory(f"{ROOT}/#", f"{PAYMENTS}/#", f"{OTHER_ROOT}/#")
        probe.expect_retained(f"{ROOT}/Status", b"connected", timeout=30)
        probe.expect_retained(f"{OTHER_ROOT}/Status", b"connected", timeout=30)
        proc = _start_prometheus(config, prom_port, [target, other_target], tmp_path)
        try:
            def ready() -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready",
                                                timeout=5) as response:
                        return response.status == 200
                except (urllib.error.URLError, OSError):
                    return proc.poll() is None and False
            assert wait_until(ready, 60, 0.5), (tmp_path / "prometheus.log").read_text()

            # Prometheus' first scrape can come seconds after /-/ready (its target discovery
            # hands over in batches): traffic before it would leave rates with one sample.
            def scraped() -> bool:
                result = _api(prom_port, "query", query="up")["data"]["result"]
                return sum(r["value"][1] == "1" for r in result) == 2
            assert wait_until(scraped, 60, 0.5), (tmp_path / "prometheus.log").read_text()

            # Traffic, spread over scrapes so rates and increases have two samples to use.
            for ref in range(1, 7):
                for root in (ROOT, OTHER_ROOT):
                    probe.publish(f"{root}/SendCommand", commands.get_serial_number(ref).hex())
                    probe.wait_for(f"{root}/MMSMessage", timeout=10)
                if ref == 2:
                    _websocket_traffic(app)
                if ref == 3:
                    probe.publish(f"{ROOT}/SendCommand", b"not hex")
                    probe.publish(f"{PAYMENTS}/create",
                                  json.dumps({"amount": 1.5, "relay": False}).encode())
                    probe.wait_for(f"{PAYMENTS}/create/response", timeout=20)
                wait_until(lambda: False, 1.0, 0.5)  # about one scrape apart

            all_value = _instance_all_value()
            results: dict[str, list[Any]] = {}

            def everything_has_data() -> bool:
                for _title, expr in expressions:
                    query = expr.replace("$instance", all_value)
                    answer = _api(prom_port, "query", query=query)
                    assert answer["status"] == "success", (expr, answer)
                    result = answer["data"]["result"]
                    # An empty histogram's quantile is NaN: no data either.
                    results[expr] = [r for r in result if r["value"][1] != "NaN"]
                return all(results.values()) and all(
                    len(results[expr]) >= 2 for _title, expr in expressions
                    if "command_latency" in expr)
            wait_until(everything_has_data, 90, 2.0)
            empty = [f"{title}: {expr}" for title, expr in expressions if not results.get(expr)]
            assert not empty, f"dashboard queries with no data: {empty}"
            merged = [f"{title}: {expr}" for title, expr in expressions
                      if any("instance" not in r["metric"] for r in results[expr])]
            assert not merged, f"queries that merge bridges under All: {merged}"
            for title, expr in expressions:
                if "command_latency" in expr:  # both bridges ran commands: one line each
                    instances = sorted(r["metric"]["instance"] for r in results[expr])
                    assert instances == sorted([target, other_target]), (title, expr, instances)

            # The instance variable's query finds this bridge.
            values = _api(prom_port, "label/instance/values",
                          **{"match[]": "magtek_bridge_build_info"})["data"]
            assert target in values
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
