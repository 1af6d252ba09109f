"""The largest packet the bridge takes: refused from its header, before the body is read."""

from __future__ import annotations

import pytest

from bridge.mqtt.packets import MalformedPacket, PacketReader, encode_connect


def test_a_packet_over_the_limit_is_refused_from_its_header_alone():
    reader = PacketReader(v5=False, max_packet=1024)
    # PUBLISH QoS 0, remaining length 2,000 (0xD0 0x0F): only the first bytes have arrived.
    with pytest.raises(MalformedPacket, match="over the 1024 accepted"):
        reader.feed(b"\x30\xd0\x0f\x00\x01t")


def test_a_packet_at_the_limit_is_read():
    reader = PacketReader(v5=False, max_packet=9)
    (packet,) = reader.feed(b"\x30\x07\x00\x01tabcd")
    assert packet.payload == b"abcd"  # type: ignore[union-attr]


def test_the_v5_connect_announces_the_limit():
    packet = encode_connect("c", keepalive=15, v5=True, maximum_packet_size=4 << 20)
    # properties: length 5, then Maximum Packet Size (0x27) = 0x00400000
    assert b"\x05\x27\x00\x40\x00\x00" in packet
    assert b"\x27" not in encode_connect("c", keepalive=15, v5=True)
