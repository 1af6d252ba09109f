"""The per-reader command intake in a running bridge: rate limit, coalesced Error reports,
and the absent-reader refusals of the bridge's own session."""

from __future__ import annotations

import json

from bridge.mms import MessageType, commands, parse_message
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import running_bridge, wait_until

SERIAL = "B123456"
ROOT = f"MagTek/Device/DynaFlexII/{SERIAL}"


def _rejected(app, reason: str) -> float:
    return app.metrics.registry.get_sample_value(
        "magtek_bridge_commands_total", {"outcome": "rejected", "reason": reason}) or 0.0


def test_commands_beyond_the_rate_are_refused_unparsed_and_reported_in_summary(
        broker, probe_factory):
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    readers = {"command_rate": 2.0, "command_burst": 3, "error_interval": 1.0}
    with running_bridge(broker, bus=bus, readers=readers) as (app, _):
        probe = probe_factory(f"{ROOT}/Error", f"{ROOT}/Status", f"{ROOT}/MMSMessage")
        probe.expect_retained(f"{ROOT}/Status", b"connected", timeout=10)
        probe.drain()
        get_serial = commands.get_serial_number(0x21).hex().encode()
        for _ in range(40):
            probe.publish(f"{ROOT}/SendCommand", get_serial, qos=0)
        assert wait_until(lambda: _rejected(app, "rate_limited") >= 30, 10)
        admitted = app.metrics.registry.get_sample_value(
            "magtek_bridge_commands_total", {"outcome": "accepted", "reason": ""})
        assert admitted is not None and 3 <= admitted <= 6  # the burst, plus the rate
        first = json.loads(probe.wait_for(f"{ROOT}/Error", timeout=5).payload)
        assert first["reason"] == "rate_limited"
        # The rest come as one summary with their count, once the interval has passed.
        summary = json.loads(probe.wait_for(
            lambda m: m.topic == f"{ROOT}/Error" and b"commands_rejected" in m.payload,
            timeout=10).payload)
        assert summary["reasons"].get("rate_limited", 0) >= 20
        assert summary["count"] + 5 >= _rejected(app, "rate_limited") - 5
        # The reader was never flooded: it saw only the admitted commands.
        sent = [m for m in bus.readers[0].host_messages if m.hex().encode() == get_serial]
        assert len(sent) == admitted
        # And it still answers once the bucket refills.
        wait_until(lambda: False, 1.0)
        probe.publish(f"{ROOT}/SendCommand", commands.get_serial_number(0x22).hex().encode())
        probe.wait_for(lambda m: m.topic == f"{ROOT}/MMSMessage" and _is_response(m.payload, 0x22),
                       timeout=10)


def _is_response(payload: bytes, ref: int) -> bool:
    message = parse_message(bytes.fromhex(payload.decode()))
    return message.message_type == MessageType.DEVICE_RESPONSE and message.ref == ref


def _error_publishes(app) -> float:
    return app.metrics.registry.get_sample_value(
        "magtek_bridge_mqtt_publishes_total", {"kind": "error"}) or 0.0


def test_refusals_for_an_absent_reader_are_coalesced(broker, probe_factory):
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    with running_bridge(broker, bus=bus, readers={"error_interval": 1.0}) as (app, _):
        probe = probe_factory(f"{ROOT}/Error", f"{ROOT}/Status")
        probe.expect_retained(f"{ROOT}/Status", b"connected", timeout=10)
        bus.unplug(0)
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"disconnected",
                       timeout=10)
        before = _error_publishes(app)
        for _ in range(200):
            probe.publish(f"{ROOT}/SendCommand", b"0102", qos=0)
        assert wait_until(lambda: _rejected(app, "reader_absent") >= 200, 10)
        summary = json.loads(probe.wait_for(
            lambda m: m.topic == f"{ROOT}/Error" and b"commands_rejected" in m.payload,
            timeout=10).payload)
        assert summary["reasons"] == {"reader_absent": summary["count"]}
        assert summary["count"] >= 150
        assert _error_publishes(app) - before <= 5 + 2  # five in full, then summaries
