"""The bench's paho baseline gets the bridge's advantage: properties encoded once."""

from __future__ import annotations

from bench.paho_publisher import PackedProperties


def test_packed_properties_pack_what_they_were_given():
    first = PackedProperties.of(b"\x02\x00\x00\x01\x2c")
    second = PackedProperties.of(b"\x00")
    assert first.pack() == b"\x02\x00\x00\x01\x2c"
    assert second.pack() == b"\x00"
    assert PackedProperties(b"\x01").pack() == b"\x01"
