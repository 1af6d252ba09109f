"""MQTT 3.1.1 and 5.0 client packets: bytes in, packets out; packets in, bytes out.

Sans-I/O, like ``bridge.mms``: no sockets, no threads, tested byte for byte. It holds only
what a client needs (CONNECT, SUBSCRIBE, PUBLISH and its acknowledgements, PINGREQ,
DISCONNECT out; CONNACK, SUBACK, PUBLISH, acknowledgements, PINGRESP, DISCONNECT in).

Why our own codec rather than paho's: on the bridge's hot path paho builds several Python
objects per PUBLISH and per PUBACK (message, info, properties, callbacks under locks), which
cost more than everything else the bridge does per message (issue 18's measurements). Here a
PUBLISH is one ``bytes`` join and a PUBACK two slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from bridge.mqtt.encoding import encode_string, encode_varint

CONNECT: Final = 0x10
CONNACK: Final = 0x20
PUBLISH: Final = 0x30
PUBACK: Final = 0x40
PUBREC: Final = 0x50
PUBREL: Final = 0x60
PUBCOMP: Final = 0x70
SUBSCRIBE: Final = 0x80
SUBACK: Final = 0x90
PINGREQ_PACKET: Final = b"\xc0\x00"
PINGRESP: Final = 0xD0
DISCONNECT: Final = 0xE0
AUTH: Final = 0xF0
MAX_REMAINING: Final = 268_435_455  # the largest remaining length MQTT can express


class MalformedPacket(ValueError):  # noqa: N818 - reads as what the peer sent
    """The broker sent bytes that are not a valid MQTT packet: the connection must end."""


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


# -- properties (MQTT v5 §2.2.2.2) -----------------------------------------------------------

_BYTE, _TWO, _FOUR, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES: Final = {
    0x01: ("PayloadFormatIndicator", _BYTE), 0x02: ("MessageExpiryInterval", _FOUR),
    0x03: ("ContentType", _STRING), 0x08: ("ResponseTopic", _STRING),
    0x09: ("CorrelationData", _BINARY), 0x0B: ("SubscriptionIdentifier", _VARINT),
    0x11: ("SessionExpiryInterval", _FOUR), 0x12: ("AssignedClientIdentifier", _STRING),
    0x13: ("ServerKeepAlive", _TWO), 0x15: ("AuthenticationMethod", _STRING),
    0x16: ("AuthenticationData", _BINARY), 0x17: ("RequestProblemInformation", _BYTE),
    0x18: ("WillDelayInterval", _FOUR), 0x19: ("RequestResponseInformation", _BYTE),
    0x1A: ("ResponseInformation", _STRING), 0x1C: ("ServerReference", _STRING),
    0x1F: ("ReasonString", _STRING), 0x21: ("ReceiveMaximum", _TWO),
    0x22: ("TopicAliasMaximum", _TWO), 0x23: ("TopicAlias", _TWO),
    0x24: ("MaximumQoS", _BYTE), 0x25: ("RetainAvailable", _BYTE),
    0x26: ("UserProperty", _PAIR), 0x27: ("MaximumPacketSize", _FOUR),
    0x28: ("WildcardSubscriptionAvailable", _BYTE),
    0x29: ("SubscriptionIdentifierAvailable", _BYTE),
    0x2A: ("SharedSubscriptionAvailable", _BYTE),
}
Properties = dict[str, object]  # name -> value; "UserProperty" -> list of (key, value)


def _varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(4):
        if at >= len(data):
            raise MalformedPacket("truncated variable byte integer")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise MalformedPacket("variable byte integer longer than 4 bytes")


def _string_bytes(data: bytes, at: int) -> tuple[bytes, int]:
    if at + 2 > len(data):
        raise MalformedPacket("truncated string length")
    end = at + 2 + int.from_bytes(data[at:at + 2], "big")
    if end > len(data):
        raise MalformedPacket("truncated string")
    return data[at + 2:end], end


def _string(data: bytes, at: int) -> tuple[str, int]:
    raw, at = _string_bytes(data, at)
    if b"\0" in raw:  # [MQTT-1.5.4-2]
        raise MalformedPacket("string holds U+0000")
    try:
        return raw.decode(), at
    except UnicodeDecodeError as exc:
        raise MalformedPacket("string is not UTF-8") from exc


def decode_properties(data: bytes, at: int) -> tuple[Properties, int]:
    """The property block at ``at`` (length prefix included); returns it and where it ends."""
    length, at = _varint(data, at)
    end = at + length
    if end > len(data):
        raise MalformedPacket("properties run past the packet")
    found: Properties = {}
    while at < end:
        identifier, at = _varint(data, at)
        known = _PROPERTY_TYPES.get(identifier)
        if known is None:
            raise MalformedPacket(f"unknown property 0x{identifier:02X}")
        name, kind = known
        value: object
        if kind == _BYTE:
            if at >= end:
                raise MalformedPacket(f"property {name} runs past its block")
            value, at = data[at], at + 1
        elif kind == _TWO:
            value, at = int.from_bytes(data[at:at + 2], "big"), at + 2
        elif kind == _FOUR:
            value, at = int.from_bytes(data[at:at + 4], "big"), at + 4
        elif kind == _VARINT:
            value, at = _varint(data, at)
        elif kind == _STRING:
            value, at = _string(data, at)
        elif kind == _BINARY:
            value, at = _string_bytes(data, at)
        else:
            key, at = _string(data, at)
            text, at = _string(data, at)
            pairs = found.setdefault(name, [])
            assert isinstance(pairs, list)
            pairs.append((key, text))
            continue
        if at > end:
            raise MalformedPacket(f"property {name} runs past its block")
        found[name] = value
    return found, end


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


# -- broker -> client -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    reason: int  # v5 reason code; 3.1.1 return codes mapped onto it (``reason_name``)
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Suback:
    mid: int
    reasons: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ack:
    kind: int  # PUBACK, PUBREC, PUBREL or PUBCOMP
    mid: int
    reason: int = 0


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: int
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pingresp:
    pass


Packet = Connack | Suback | Publish | Ack | Disconnect | Pingresp

# The fixed header's low four bits where they are reserved (§2.1.3): anything else is malformed.
_FLAGS: Final = {CONNACK: 0, PUBACK: 0, PUBREC: 0, PUBREL: 2, PUBCOMP: 0, SUBACK: 0,
                 PINGRESP: 0, DISCONNECT: 0}

# MQTT 3.1.1 CONNACK return codes as the v5 reason codes that mean the same (§3.2.2.3).
_V3_CONNACK: Final = {0: 0x00, 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}


class PacketReader:
    """Splits the broker's byte stream into packets (keeps a partial one for the next feed)."""

    def __init__(self, *, v5: bool, max_packet: int = 0) -> None:
        self.v5 = v5
        # Larger packets end the connection (MQTT 3.1.1 brokers cannot be told the limit; a
        # v5 broker drops them for us): one hostile publish must not take hundreds of MB.
        self._max_packet = max_packet
        self._rest = b""

    def feed(self, data: bytes) -> list[Packet]:
        if self._rest:
            data = self._rest + data
        packets: list[Packet] = []
        at = 0
        end = len(data)
        while end - at >= 2:
            first = data[at]
            length = data[at + 1]
            start = at + 2
            if length & 0x80:
                try:
                    length, start = _varint(data, at + 1)
                except MalformedPacket:
                    if end - at < 5:
                        break  # the length itself is not complete yet
                    raise
            if self._max_packet and start - at + length > self._max_packet:
                raise MalformedPacket(f"a packet of {start - at + length} bytes, over the "
                                      f"{self._max_packet} accepted")
            if start + length > end:
                break
            if first == PUBACK and length == 2:  # the hot path: a successful PUBACK
                packets.append(Ack(PUBACK, (data[start] << 8) | data[start + 1]))
            else:
                packets.append(self._decode(first, data[start:start + length]))
            at = start + length
        self._rest = data[at:]
        return packets

    def _decode(self, first: int, body: bytes) -> Packet:
        kind = first & 0xF0
        flags = _FLAGS.get(kind)
        if flags is not None and first & 0x0F != flags:
            raise MalformedPacket(f"reserved flags 0x{first & 0x0F:X} on packet 0x{kind:02X}")
        try:
            if kind == PUBLISH:
                return self._publish(first, body)
            if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
                if len(body) < 2:
                    raise MalformedPacket("acknowledgement without a packet identifier")
                reason = body[2] if len(body) > 2 else 0
                return Ack(kind, int.from_bytes(body[:2], "big"), reason)
            if kind == CONNACK:
                if len(body) < 2:
                    raise MalformedPacket("short CONNACK")
                if not self.v5:
                    return Connack(bool(body[0] & 1), _V3_CONNACK.get(body[1], 0x80))
                props = decode_properties(body, 2)[0] if len(body) > 2 else {}
                return Connack(bool(body[0] & 1), body[1], props)
            if kind == SUBACK:
                if len(body) < 3:
                    raise MalformedPacket("short SUBACK")
                at = decode_properties(body, 2)[1] if self.v5 else 2
                return Suback(int.from_bytes(body[:2], "big"), tuple(body[at:]))
            if kind == PINGRESP:
                return Pingresp()
            if kind == DISCONNECT:
                reason = body[0] if body else 0
                props = decode_properties(body, 1)[0] if len(body) > 1 else {}
                return Disconnect(reason, props)
        except IndexError as exc:
            raise MalformedPacket(f"truncated packet 0x{first:02X}") from exc
        raise MalformedPacket(f"unexpected packet type 0x{first:02X}")

    def _publish(self, first: int, body: bytes) -> Publish:
        qos = (first >> 1) & 0x03
        if qos == 3:
            raise MalformedPacket("PUBLISH with QoS 3")
        topic, at = _string(body, 0)
        mid = 0
        if qos:
            if at + 2 > len(body):
                raise MalformedPacket("PUBLISH cut short in its packet identifier")
            mid, at = int.from_bytes(body[at:at + 2], "big"), at + 2
            if not mid:  # §2.2.1: QoS > 0 has a non-zero identifier
                raise MalformedPacket("PUBLISH with QoS > 0 and packet identifier 0")
        props: Properties = {}
        if self.v5:
            props, at = decode_properties(body, at)
            if "TopicAlias" in props:  # our CONNECT allows none (Topic Alias Maximum 0)
                raise MalformedPacket("PUBLISH with a Topic Alias we never allowed")
        if not topic:
            raise MalformedPacket("PUBLISH with an empty topic")
        if "+" in topic or "#" in topic:
            raise MalformedPacket(f"PUBLISH topic with a wildcard: {topic!r}")
        return Publish(topic, body[at:], qos, bool(first & 1), bool(first & 0x08), mid, props)


# v5 reason codes (§2.4) as operators read them (the same words as paho and mosquitto).
REASON_NAMES: Final = {
    0x00: "Success", 0x01: "Granted QoS 1", 0x02: "Granted QoS 2", 0x04: "Disconnect with will",
    0x10: "No matching subscribers", 0x80: "Unspecified error", 0x81: "Malformed packet",
    0x82: "Protocol error", 0x83: "Implementation specific error",
    0x84: "Unsupported protocol version", 0x85: "Client identifier not valid",
    0x86: "Bad user name or password", 0x87: "Not authorized", 0x88: "Server unavailable",
    0x89: "Server busy", 0x8A: "Banned", 0x8B: "Server shutting down",
    0x8C: "Bad authentication method", 0x8D: "Keep alive timeout", 0x8E: "Session taken over",
    0x8F: "Topic filter invalid", 0x90: "Topic name invalid", 0x91: "Packet identifier in use",
    0x92: "Packet identifier not found", 0x93: "Receive maximum exceeded",
    0x94: "Topic alias invalid", 0x95: "Packet too large", 0x96: "Message rate too high",
    0x97: "Quota exceeded", 0x98: "Administrative action", 0x99: "Payload format invalid",
    0x9A: "Retain not supported", 0x9B: "QoS not supported", 0x9C: "Use another server",
    0x9D: "Server moved", 0x9E: "Shared subscriptions not supported",
    0x9F: "Connection rate exceeded", 0xA0: "Maximum connect time",
    0xA1: "Subscription identifiers not supported", 0xA2: "Wildcard subscriptions not supported",
}


def reason_name(code: int) -> str:
    return REASON_NAMES.get(code, f"reason 0x{code:02X}")


__all__ = [
    "DISCONNECT_PACKET",
    "PINGREQ_PACKET",
    "Ack",
    "Connack",
    "Disconnect",
    "MalformedPacket",
    "PacketReader",
    "Pingresp",
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
