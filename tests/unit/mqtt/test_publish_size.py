"""publish_packet_size against what paho really writes, and TLS failure wording."""

from __future__ import annotations

import ssl

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.mqtt.encoding import (
    describe_tls_failure,
    encode_publish_properties,
    encode_user_properties,
    encoded_publish_size,
    message_properties,
    publish_packet_size,
)


def _paho_size(topic: str, payload: bytes, props: list[tuple[str, str]], expiry: int | None,
               qos: int) -> int:
    # Encode the packet as paho does for MQTT v5 (fixed header + variable header + payload).
    properties = Properties(PacketTypes.PUBLISH)
    if props:
        properties.UserProperty = props
    if expiry is not None:
        properties.MessageExpiryInterval = expiry
    packed = properties.pack() if (props or expiry is not None) else b""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + len(packed) + len(payload)
    header = bytearray()
    value = remaining
    while True:
        byte, value = value % 128, value // 128
        header.append(byte | (0x80 if value else 0))
        if not value:
            break
    return 1 + len(header) + remaining


@pytest.mark.parametrize("size", [0, 10, 200, 20_000, 3_000_000])
@pytest.mark.parametrize("with_props", [False, True])
def test_size_matches_encoding(size, with_props):
    topic = "MagTek/Device/DynaFlexII/B123456/MMSMessage"
    payload = b"A" * size
    props = [("boot_id", "0123456789abcdef"), ("seq", "42"), ("replayed", "true")]
    expiry = 290 if with_props else None
    expected = _paho_size(topic, payload, props if with_props else [], expiry, 1)
    got = publish_packet_size(topic, payload, props if with_props else (), qos=1, expiry=expiry)
    assert got == expected


def test_tls_descriptions():
    unknown = ssl.SSLCertVerificationError(1, "certificate verify failed")
    unknown.verify_message = "unable to get local issuer certificate"
    assert "unknown CA" in describe_tls_failure(unknown)
    mismatch = ssl.SSLCertVerificationError(1, "x")
    mismatch.verify_message = "Hostname mismatch, certificate is not valid for 'example'."
    assert "host name" in describe_tls_failure(mismatch)
    expired = ssl.SSLCertVerificationError(1, "x")
    expired.verify_message = "certificate has expired"
    assert "expired" in describe_tls_failure(expired)
    required = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert")
    required.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert "requires a client certificate" in describe_tls_failure(required)
    refused = ssl.SSLError(1, "x")
    refused.reason = "SSLV3_ALERT_BAD_CERTIFICATE"
    assert "refused our client certificate" in describe_tls_failure(refused)
    assert describe_tls_failure(ConnectionRefusedError()) is None


@pytest.mark.parametrize("expiry", [None, 1, 300, 2**32 - 1])
@pytest.mark.parametrize("correlation", [None, b"", b"\x00\xffabc"])
@pytest.mark.parametrize("pairs", [[], [("boot_id", "0123456789abcdef"), ("seq", "7")],
                                   [("k\u00e9y", "v" * 300)]])
def test_encoded_properties_match_paho(expiry, correlation, pairs):
    reference = Properties(PacketTypes.PUBLISH)
    if expiry is not None:
        reference.MessageExpiryInterval = expiry
    if correlation is not None:
        reference.CorrelationData = correlation
    if pairs:
        reference.UserProperty = pairs
    ours = encode_publish_properties(pairs, correlation_data=correlation, expiry_interval=expiry)
    assert ours == reference.pack()
    decoded = Properties(PacketTypes.PUBLISH)
    decoded.unpack(ours)
    assert getattr(decoded, "UserProperty", []) == pairs


@pytest.mark.parametrize("expiry", [1, 300, 2**32 - 1])
@pytest.mark.parametrize("pairs", [[], [("boot_id", "0123456789abcdef"), ("seq", "7")],
                                   [("boot_id", "b"), ("seq", "1"), ("replayed", "true")],
                                   [("k\u00e9y", "v" * 300)], [("k", "v")] * 30])
def test_device_message_properties_match_paho(expiry, pairs):
    # The courier's path: user properties encoded once on the read thread, the expiry added
    # at each send; byte for byte what paho (and encode_publish_properties) write.
    reference = Properties(PacketTypes.PUBLISH)
    reference.MessageExpiryInterval = expiry
    if pairs:
        reference.UserProperty = pairs
    ours = message_properties(encode_user_properties(pairs), expiry)
    assert ours == reference.pack()
    assert ours == encode_publish_properties(pairs, expiry_interval=expiry)


@pytest.mark.parametrize("v5", [False, True])
@pytest.mark.parametrize("size", [0, 100, 20_000])
def test_size_matches_our_own_packet_with_no_properties(v5, size):
    from bridge.mqtt.packets import check_topic, encode_publish  # noqa: PLC0415

    topic = "MagTek/Device/DynaFlexII/B123456/MMSMessage"
    packet = encode_publish(check_topic(topic), b"A" * size, qos=1, mid=1,
                            properties=b"\x00" if v5 else None)
    assert publish_packet_size(topic, b"A" * size, qos=1, v5=v5) == len(packet)


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("size", [0, 100, 20_000])
@pytest.mark.parametrize("properties", [None, b"\x00", message_properties(
    encode_user_properties([("boot_id", "0123456789abcdef"), ("seq", "7")]), 300)])
def test_the_couriers_size_from_the_encoded_block_is_the_packets_length(qos, size, properties):
    from bridge.mqtt.packets import check_topic, encode_publish  # noqa: PLC0415

    topic = "MagTek/Device/DynaFlexII/B123456/MMSMessage"
    packet = encode_publish(check_topic(topic), b"A" * size, qos=qos, mid=1 if qos else 0,
                            properties=properties)
    assert encoded_publish_size(topic, size, len(properties or b""), qos=qos) == len(packet)
