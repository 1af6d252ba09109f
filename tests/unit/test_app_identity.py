"""The bridge names its host in its topics and its Info payload (fleet pattern, issue 9).

A central broker sees many stores' bridges side by side; the store id comes from the store
broker's remapping (stores/<id>/...), the host id from the bridge itself.
"""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from bridge.app import BridgeApp
from bridge.config import load_settings
from bridge.metrics import Metrics
from bridge.transport.simulated import SimulatedBus


def _app(**topics: str) -> BridgeApp:
    settings = load_settings(None, environ={}, overrides={
        "topics": topics, "metrics": {"enabled": False},
        "readers": {"backend": "simulated"}})
    return BridgeApp(settings, backend=SimulatedBus(count=0),
                     metrics=Metrics(CollectorRegistry(), process_metrics=False))


def test_bridge_topics_and_info_carry_the_host_id():
    app = _app(host_id="store42-lane-pi", bridge_prefix="MagTek/Bridge/")

    info = app._info_publication()
    payload = json.loads(info.payload)

    assert app.topics.status == "MagTek/Bridge/store42-lane-pi/State"
    assert info.topic == "MagTek/Bridge/store42-lane-pi/BridgeInfo"
    assert (info.retain, info.qos) == (True, 1)
    assert payload["host_id"] == "store42-lane-pi"
    assert payload["device_prefix"] == "MagTek/Device/"
    assert payload["readers"] == []
    assert len(payload["boot_id"]) == 16


def test_bridge_prefix_is_configurable_beside_the_host_id():
    app = _app(host_id="pi-7", bridge_prefix="Store/0042/Bridge/")

    assert app._info_publication().topic == "Store/0042/Bridge/pi-7/BridgeInfo"
    assert json.loads(app._info_publication().payload)["host_id"] == "pi-7"
