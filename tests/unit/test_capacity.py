"""bench.capacity: the sale flows it drives, and packet sizes checked against what paho sends."""

from __future__ import annotations

import io
import socket

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench import capacity
from bridge.mms import MessageType, packetize, parse_message
from tests.fakes.mqtt_wire import read_packet

CONNECT, CONNACK, PUBLISH = 0x10, 0x20, 0x30


def _publish_bytes_paho_sends(protocol: MQTTProtocolVersion, topic: str, payload: bytes,
                              pairs: list[tuple[str, str]]) -> bytes:
    """The PUBLISH packet paho writes, captured by a minimal fake broker on loopback."""
    v5 = protocol == MQTTProtocolVersion.MQTTv5
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(5)
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="sizer", protocol=protocol)
        client.connect("127.0.0.1", server.getsockname()[1])
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            try:
                client.loop(0.2)
                assert read_packet(conn)[0] == CONNECT
                conn.sendall(bytes([CONNACK, 3, 0, 0, 0]) if v5 else bytes([CONNACK, 2, 0, 0]))
                client.loop(0.2)
                props = None
                if pairs:
                    props = Properties(PacketTypes.PUBLISH)
                    props.UserProperty = pairs
                client.publish(topic, payload, qos=1, properties=props)
                client.loop(0.2)
                packet = read_packet(conn)
            finally:
                client.disconnect()
    assert packet[0] & 0xF0 == PUBLISH
    return packet


@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311])
@pytest.mark.parametrize("size", [1, 60, 200])
def test_publish_size_matches_the_packet_paho_sends(protocol, size):
    v5 = protocol == MQTTProtocolVersion.MQTTv5
    topic = "stores/00042/MagTek/Device/DynaFlexII/B123456/MMSMessage"
    payload = b"AB" * size  # 200 -> 400 B: a two-byte remaining length
    pairs = [("boot_id", capacity.BOOT_ID), ("seq", "123456")] if v5 else []

    sent = _publish_bytes_paho_sends(protocol, topic, payload, pairs)

    expected = capacity.publish_size(topic, len(payload), v5=v5,
                                     properties=capacity.user_properties(pairs))
    assert len(sent) == expected


def test_varint_size_boundaries():
    assert [capacity.varint_size(n) for n in (0, 127, 128, 16_383, 16_384, 268_435_455)] == [
        1, 1, 2, 2, 3, 4]
    with pytest.raises(ValueError, match="variable byte integer"):
        capacity.varint_size(268_435_456)


@pytest.mark.parametrize(("flow", "count"), [("tap", 6), ("insert", 8), ("swipe", 6)])
def test_run_sale_drives_the_simulated_flow(flow, count):
    command, messages, reports = capacity.run_sale(flow)

    parsed = [parse_message(m) for m in messages]
    assert parse_message(command).command_id == 0x1001
    assert len(parsed) == count
    # The reader answers the start, prompts, then sends the card flow ending with the batch
    # record (PROTOCOL.md section 5) or, for insert, the card-removed event.
    assert (parsed[0].message_type, parsed[0].ref, parsed[0].command_id) == (
        MessageType.DEVICE_RESPONSE, 0x01, 0x1001)
    assert parsed[1].command_id == 0x1803
    data = [m for m in parsed if (m.notification_detail or b"")[1:2] == b"\x08"]
    assert len(data) == 2  # ARQC and batch: the two card-data messages
    assert reports == sum(len(packetize(m)) for m in [command, *messages])


def test_sale_sizes_use_remapped_topics_and_hex_payloads():
    one = capacity.sale("tap", store_id="7")
    assert one.messages == 7  # the POS command and six device messages
    assert one.publishes[0].topic == "stores/7/MagTek/Device/DynaFlexII/B123456/SendCommand"
    assert all(p.topic == "stores/7/MagTek/Device/DynaFlexII/B123456/MMSMessage"
               for p in one.publishes[1:])
    assert all(p.payload == 2 * p.mms_bytes for p in one.publishes)
    assert all(p.size > p.payload + len(p.topic) for p in one.publishes)
    v311 = capacity.sale("tap", store_id="7", v5=False)
    # boot_id and seq ride only on MQTT 5; 3.1.1 has no properties at all.
    assert one.mqtt_bytes - v311.mqtt_bytes == sum(p.properties for p in one.publishes)


def test_fleet_load_scales_with_stores_and_consumers():
    one = capacity.sale("insert", store_id="00042")
    load = capacity.fleet_load(one, stores=1_000, sales_per_store_minute=8, consumers=2,
                               readers_per_store=4, keepalive=30)
    assert load.sales_per_second == pytest.approx(1_000 * 8 / 60)
    assert load.messages_in == pytest.approx(load.sales_per_second * one.messages)
    assert load.messages_out == pytest.approx(2 * load.messages_in)
    assert load.mqtt_in == pytest.approx(load.sales_per_second * one.mqtt_bytes)
    assert load.wire_in > load.mqtt_in
    assert (load.connections, load.retained) == (1_002, 1_000 * 11)


def test_main_prints_the_tables():
    out = io.StringIO()
    assert capacity.main(["--stores", "1000", "10000", "--lanes", "3"], out) == 0
    text = out.getvalue()
    assert "3 lanes x 2 sales/lane/min = 6 sales/store/min" in text
    assert "| 1,000 | 100 |" in text
    assert "| 10,000 | 1,000 |" in text
