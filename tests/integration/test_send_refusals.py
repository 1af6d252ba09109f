"""``magtek-bridge send`` takes only its own command's refusal from ``<root>/Error``.

Refusal reports name the refused command (``ref``, ``command_id``) when it was readable and
echo its MQTT v5 correlation data; ``send`` sets correlation data and matches by it (or by
ref and command id over MQTT 3.1.1), so other clients' refusals on the same reader's ``Error``
topic do not end it. Run through the installed script, against a bridge and a real broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from tests.integration.harness import REPO, running_bridge
from tests.integration.support import make_properties

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "magtek-bridge"
ROOT = "MagTek/Device/DynaFlexII/B123456"
# A device response is no command: refused as not_request, but readable (ref 13, id 1008).
DEVICE_RESPONSE = "AA00810482131008820400000000"
PROTOCOLS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}


def _send(broker, protocol: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGTEK_BRIDGE_")}
    env["MAGTEK_BRIDGE_MQTT__PROTOCOL"] = protocol
    return subprocess.run(
        [str(SCRIPT), "send", "--host", broker.host, "--port", str(broker.port), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


class Noise:
    """Another client refused over and over, one command per ``period``: garbage, and a
    readable refused command with correlation data of its own, in turn."""

    def __init__(self, probe, *, v5: bool, period: float) -> None:
        self.probe = probe
        self.v5 = v5
        self.period = period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="noise", daemon=True)

    def _run(self) -> None:
        theirs = None
        if self.v5:
            theirs = make_properties(correlation_data=b"not-yours")
        garbage = True
        while not self.stop.wait(self.period):
            if garbage:
                self.probe.publish(f"{ROOT}/SendCommand", b"garbage, not hex")
            else:
                self.probe.publish(f"{ROOT}/SendCommand", DEVICE_RESPONSE, properties=theirs)
            garbage = not garbage

    def __enter__(self) -> Noise:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_send_ignores_other_clients_refusals(broker, probe_factory, protocol):
    with running_bridge(broker, mqtt={"protocol": protocol}):
        errors = probe_factory(f"{ROOT}/Error", f"{ROOT}/Status",
                               protocol=PROTOCOLS[protocol])
        errors.expect_retained(f"{ROOT}/Status", b"connected", timeout=30)
        noise = probe_factory(protocol=PROTOCOLS[protocol])
        v5 = protocol == "5"
        # Its own refusal ends it, with exit code 4, while another client's commands are
        # refused too (within the reports sent in full: readers.error_interval, burst 5).
        with Noise(noise, v5=v5, period=1.5):
            for _ in range(2):
                refused = _send(broker, protocol, ROOT, "AA00810482B5D101820400000000")
                assert refused.returncode == 4, (refused.stdout, refused.stderr)
                line = refused.stdout.strip()
                assert line.startswith("rejected by the bridge: "), line
                report = json.loads(line.removeprefix("rejected by the bridge: "))
                assert report["reason"] == "not_request"
                assert (report["ref"], report["command_id"]) == ("B5", "D101")

        # A good command succeeds while another client floods the reader with refused ones
        # (reports in full, then summaries) all through the response and the follow window.
        with Noise(noise, v5=v5, period=0.05):
            result = _send(broker, protocol, ROOT, "get_serial", "--follow", "3")
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert "D101" in result.stdout and "rejected" not in result.stdout
        seen = []  # the others' refusals were there to be mistaken for its own
        while not (any(r.get("ref") == "13" for r in seen)
                   and any(r["reason"] == "summary" for r in seen)):
            seen.append(json.loads(errors.wait_for(f"{ROOT}/Error", timeout=10).payload))


def test_a_refusal_echoes_the_commands_correlation_data(broker, probe_factory):
    with running_bridge(broker):
        errors = probe_factory(f"{ROOT}/Error", f"{ROOT}/Status")
        errors.expect_retained(f"{ROOT}/Status", b"connected", timeout=30)
        sender = probe_factory()
        properties = make_properties(correlation_data=b"order-17")
        sender.publish(f"{ROOT}/SendCommand", DEVICE_RESPONSE, properties=properties)
        report = errors.wait_for(f"{ROOT}/Error")
        assert report.correlation_data == b"order-17"
        body = json.loads(report.payload)
        assert (body["ref"], body["command_id"], body["reason"]) == ("13", "1008", "not_request")
        assert {"error", "detail", "topic", "size", "time"} <= set(body)
        sender.publish(f"{ROOT}/SendCommand", b"zz")  # unreadable: nothing to name
        garbage = errors.wait_for(f"{ROOT}/Error")
        assert garbage.correlation_data is None and "ref" not in json.loads(garbage.payload)
