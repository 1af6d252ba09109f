"""MQTT 3.1.1 and 5.0 client packets: bytes in, packets out; packets in, bytes out.

Sans-I/O, like ``bridge.mms``: no sockets, no threads, tested byte for byte. It holds only
what a client needs (CONNECT, SUBSCRIBE, PUBLISH and its acknowledgements, PINGREQ,
DISCONNECT out; CONNACK, SUBACK, PUBLISH, acknowledgements, PINGRESP, DISCONNECT in).

This module encodes what we send; the decoding side (``PacketReader``, the packets it returns,
``MalformedPacket``) lives in ``bridge.mqtt.decoding`` and the packet types in
``bridge.mqtt.packet_types``. Both are re-exported here, so callers use this one module.

Why our own codec rather than paho's: on the bridge's hot path paho builds several Python
objects per PUBLISH and per PUBACK (message, info, properties, callbacks under locks), which
cost more than everything else the bridge does per message (issue 18's measurements). Here a
PUBLISH is one ``bytes`` join and a PUBACK two slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bridge.mqtt.decoding import (
    REASON_NAMES,
    Ack,
    Connack,
    Disconnect,
    MalformedPacket,
    Packet,
    PacketReader,
    Pingresp,
    Properties,
    Publish,
    Suback,
    decode_properties,
    reason_name,
)
from bridge.mqtt.encoding import encode_string, encode_varint
from bridge.mqtt.packet_types import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
)

PINGREQ_PACKET: Final = b"\xc0\x00"
MAX_REMAINING: Final = 268_435_455  # the largest remaining length MQTT can express


@dataclass(frozen=True, slots=True)
class Publication:
    """A message a session publishes on its own: its will, a birth, a final."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


Will = Publication  # what ``encode_connect`` takes as the will


# -- properties (MQTT v5 §2.2.2.2) -----------------------------------------------------------

def _encode_properties(values: Sequence[tuple[int, bytes]]) -> bytes:
    body = b"".join(bytes((identifier,)) + value for identifier, value in values)
    return encode_varint(len(body)) + body


# -- client -> broker -------------------------------------------------------------------------

def _packet(first: int, body: bytes) -> bytes:
    if len(body) > MAX_REMAINING:
        raise ValueError(f"packet of {len(body)} bytes is larger than MQTT allows")
    return bytes((first,)) + encode_varint(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    keepalive: int,
    v5: bool,
    clean_start: bool = True,
    session_expiry: int = 0,
    receive_maximum: int | None = None,
    maximum_packet_size: int = 0,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    """CONNECT (§3.1). v5 properties: session expiry, receive maximum and the largest packet
    we accept (each only when given: the broker then drops larger messages for us)."""
    flags = 0x02 if clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = encode_string(b"MQTT") + bytes((5 if v5 else 4, flags)) + keepalive.to_bytes(2, "big")
    if v5:
        props: list[tuple[int, bytes]] = []
        if session_expiry:
            props.append((0x11, session_expiry.to_bytes(4, "big")))
        if receive_maximum is not None:
            props.append((0x21, receive_maximum.to_bytes(2, "big")))
        if maximum_packet_size:
            props.append((0x27, maximum_packet_size.to_bytes(4, "big")))
        body += _encode_properties(props)
    body += encode_string(client_id)
    if will is not None:
        if v5:
            body += b"\x00"  # no will properties
        body += encode_string(will.topic) + encode_string(will.payload)
    if username is not None:
        body += encode_string(username)
    if password is not None:
        body += encode_string(password)
    return _packet(CONNECT, body)


def encode_subscribe(mid: int, filters: Sequence[tuple[str, int]], *, v5: bool) -> bytes:
    """SUBSCRIBE (§3.8); v5 options carry only the QoS (no local: off, retain as published)."""
    body = mid.to_bytes(2, "big") + (b"\x00" if v5 else b"")
    for topic, qos in filters:
        body += encode_string(topic) + bytes((qos,))
    return _packet(SUBSCRIBE | 0x02, body)


def check_topic(topic: str) -> bytes:
    """A topic name we may publish to, encoded with its length (§4.7): else ValueError."""
    raw = topic.encode()
    if not raw:
        raise ValueError("publish topic is empty")
    if b"+" in raw or b"#" in raw:
        raise ValueError(f"publish topic contains a wildcard: {topic!r}")
    if b"\0" in raw:
        raise ValueError("publish topic contains a NUL character")
    if len(raw) > 65535:
        raise ValueError("publish topic is longer than 65,535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def encode_publish(
    topic: bytes,
    payload: bytes,
    *,
    qos: int,
    mid: int,
    retain: bool = False,
    properties: bytes | None = None,
) -> bytes:
    """PUBLISH (§3.3). ``topic`` as ``check_topic`` returns it; ``properties`` the encoded v5
    block (``encode_publish_properties``), b"\\x00" for none, None on MQTT 3.1.1."""
    head = topic + mid.to_bytes(2, "big") if qos else topic
    if properties is not None:
        head += properties
    length = len(head) + len(payload)
    if length > MAX_REMAINING:
        raise ValueError(f"publish of {len(payload)} bytes is larger than MQTT allows")
    first = PUBLISH | (qos << 1) | (1 if retain else 0)
    if length < 128:
        return bytes((first, length)) + head + payload
    return bytes((first,)) + encode_varint(length) + head + payload


def encode_ack(kind: int, mid: int) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP with success (no reason code: §3.4.2.1)."""
    first = kind | 0x02 if kind == PUBREL else kind
    return bytes((first, 2)) + mid.to_bytes(2, "big")


DISCONNECT_PACKET: Final = b"\xe0\x00"  # normal disconnection: the broker drops our will



__all__ = [
    "AUTH",
    "CONNACK",
    "CONNECT",
    "DISCONNECT",
    "DISCONNECT_PACKET",
    "MAX_REMAINING",
    "PINGREQ_PACKET",
    "PINGRESP",
    "PUBACK",
    "PUBCOMP",
    "PUBLISH",
    "PUBREC",
    "PUBREL",
    "REASON_NAMES",
    "SUBACK",
    "SUBSCRIBE",
    "Ack",
    "Connack",
    "Disconnect",
    "MalformedPacket",
    "Packet",
    "PacketReader",
    "Pingresp",
    "Properties",
    "Publication",
    "Publish",
    "Suback",
    "Will",
    "check_topic",
    "decode_properties",
    "encode_ack",
    "encode_connect",
    "encode_publish",
    "encode_subscribe",
    "reason_name",
]
