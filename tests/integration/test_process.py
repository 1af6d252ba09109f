"""The bridge as a real process: signals, last will, exit codes, TLS, logs, outside clients."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys

import pytest

from bridge.mms import commands
from tests.integration.harness import REPO, bridge_process

pytestmark = pytest.mark.integration

ROOT = "MagTek/Device/DynaFlexII/B123456"  # the simulator's default serial
# The fake test PAN inside the simulator's card data (PROTOCOL.md §9).
PAN = "4761730000000119"
GET_SERIAL_HEX = "AA00810401B5D1018418D10181072B06010401F6098501028704020101018902C100"


def test_sigkill_leaves_last_will_and_sigterm_is_clean(broker, probe_factory, tmp_path):
    probe = probe_factory(f"{ROOT}/Status", "MagTek/Bridge/proc/State")
    with bridge_process(broker, tmp_path, "--simulate", "1") as proc:
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"connected",
                       timeout=15)
        proc.signal(signal.SIGKILL)
        proc.wait()
        # The broker notices the dead connection and publishes each session's will.
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"disconnected",
                       timeout=10)
        probe.wait_for(lambda m: m.topic == "MagTek/Bridge/proc/State"
                       and m.payload == b"offline", timeout=10)

    probe.drain()
    with bridge_process(broker, tmp_path, "--simulate", "1") as proc:
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"connected",
                       timeout=15)
        probe.wait_for(lambda m: m.topic == "MagTek/Bridge/proc/State"
                       and m.payload == b"online", timeout=10)
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.log_text()
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"disconnected",
                       timeout=5)
        probe.wait_for(lambda m: m.topic == "MagTek/Bridge/proc/State"
                       and m.payload == b"offline", timeout=5)
        assert "bridge_stopped" in proc.log_text()


def test_bad_config_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[mqtt]\nport = "not a port"\n')
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert "mqtt.port" in result.stderr
    assert str(config) in result.stderr or "bad.toml" in result.stderr

    missing = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(tmp_path / "nope.toml")],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )
    assert missing.returncode == 2
    assert "nope.toml" in missing.stderr


def test_debug_log_of_a_card_transaction_has_no_pan(broker, probe_factory, tmp_path):
    probe = probe_factory(f"{ROOT}/MMSMessage", f"{ROOT}/Status")
    with bridge_process(broker, tmp_path, "--simulate", "1",
                        env={"MAGTEK_BRIDGE_LOGGING__LEVEL": "debug"}) as proc:
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"connected",
                       timeout=15)
        probe.publish(f"{ROOT}/SendCommand", commands.start_transaction(0x01).hex().encode())
        # The simulator taps a card by itself; wait for the batch notification (0101 xx080302).
        arqc = probe.wait_for(lambda m: m.topic == f"{ROOT}/MMSMessage"
                              and m.payload[8:16] == b"83000101"
                              and m.payload[20:28].endswith(b"080202"), timeout=15)
        # The card data does go to MQTT (that is the bridge's job) ...
        assert PAN.encode().hex().upper().encode() in arqc.payload
        probe.wait_for(lambda m: m.topic == f"{ROOT}/MMSMessage"
                       and m.payload[20:28].endswith(b"080302"), timeout=15)
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    log = proc.log_text()
    assert "reader_message" in log  # debug logging really was on
    # ... but never into a log line, neither as digits nor as hex.
    assert PAN not in log
    assert PAN.encode().hex() not in log.lower()
    assert not re.search(r"[0-9A-Fa-f]{64,}", log)


def test_outside_clients_mosquitto_pub_and_sub(broker, probe_factory, tmp_path):
    if shutil.which("mosquitto_sub") is None:
        pytest.fail("mosquitto_sub is missing: install mosquitto-clients (scripts/test does)")
    probe = probe_factory(f"{ROOT}/Status")
    with bridge_process(broker, tmp_path, "--simulate", "1"):
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"connected",
                       timeout=15)
        sub = subprocess.Popen(
            ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t",
             f"{ROOT}/MMSMessage", "-C", "1", "-W", "10"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            # Retry the publish until the subscriber's SUBACK has certainly arrived.
            out = ""
            for _ in range(20):
                subprocess.run(
                    ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-t",
                     f"{ROOT}/SendCommand", "-m", GET_SERIAL_HEX],
                    check=True, timeout=10,
                )
                try:
                    out, _ = sub.communicate(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            sub.kill()
        assert out.strip() == (
            "AA00810482B5D1018204000000008482001CD10181072B06010401F6098501028704020101018906C104B1234560"
        )


def test_tls_connection_with_test_ca(tls_broker, probe_factory, tmp_path):
    env = {
        "MAGTEK_BRIDGE_MQTT__TLS__ENABLED": "true",
        "MAGTEK_BRIDGE_MQTT__TLS__CA_FILE": str(tls_broker.ca_file),
    }
    probe = probe_factory(f"{ROOT}/Status", broker=tls_broker)
    with bridge_process(tls_broker, tmp_path, "--simulate", "1", env=env) as proc:
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"connected",
                       timeout=15)
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
