"""A publish far larger than any command, sent to a reader's SendCommand: the bridge takes
none of it into memory and keeps serving. MQTT v5: the bridge's CONNECT announces its Maximum
Packet Size, so the broker drops the message for it (the connection stays). MQTT 3.1.1 has no
way to say so: the packet header alone ends that connection, a fresh one follows."""

from __future__ import annotations

import pytest

from bridge.mms import MessageType, commands, parse_message
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import running_bridge, wait_until

SERIAL = "B123456"
ROOT = f"MagTek/Device/DynaFlexII/{SERIAL}"
HUGE = 6 << 20  # bytes: over the 4 MiB the bridge takes by default


def _answered(probe, ref: int) -> None:
    probe.publish(f"{ROOT}/SendCommand", commands.get_serial_number(ref).hex().encode())
    probe.wait_for(lambda m: m.topic == f"{ROOT}/MMSMessage" and _is_response(m.payload, ref),
                   timeout=15)


def _rejections(app) -> list[str]:
    return [sample.labels["reason"] for metric in app.metrics.registry.collect()
            if metric.name == "magtek_bridge_commands"
            for sample in metric.samples
            if sample.labels.get("outcome") == "rejected" and sample.value]


def _is_response(payload: bytes, ref: int) -> bool:
    message = parse_message(bytes.fromhex(payload.decode()))
    return message.message_type == MessageType.DEVICE_RESPONSE and message.ref == ref


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_an_oversize_command_never_reaches_memory_and_the_reader_keeps_serving(
        broker, probe_factory, protocol):
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    with running_bridge(broker, bus=bus, mqtt={"protocol": protocol}) as (app, _):
        probe = probe_factory(f"{ROOT}/Status", f"{ROOT}/MMSMessage")
        probe.expect_retained(f"{ROOT}/Status", b"connected", timeout=10)
        session = app.supervisor.sessions()[0]
        assert session.link is not None
        _answered(probe, 0x31)
        generation = session.link.generation
        probe.publish(f"{ROOT}/SendCommand", b"A" * HUGE, qos=1)
        if protocol == "5":
            _answered(probe, 0x32)  # after the huge one, on the same connection
            assert session.link.generation == generation
            # Never delivered to the bridge: had it been, the intake would have refused it.
            assert not _rejections(app)
        else:
            assert wait_until(lambda: session.link.generation > generation, 20)
            _answered(probe, 0x32)
        assert not [m for m in bus.readers[0].host_messages if len(m) > 1024]
