"""MQTT 3.1.1 and 5.0 packets from the broker: bytes in, packets out.

Sans-I/O like the rest of the codec (``bridge.mqtt.packets`` re-exports every name here):
``PacketReader`` splits the broker's byte stream into the packets a client receives (CONNACK,
SUBACK, PUBLISH, acknowledgements, PINGRESP, DISCONNECT) and raises ``MalformedPacket`` for
bytes that are not MQTT; ``decode_properties`` reads a v5 property block; ``reason_name``
turns a v5 reason code into the words operators know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from bridge.mqtt.packet_types import (
    CONNACK,
    DISCONNECT,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
)


class MalformedPacket(ValueError):  # noqa: N818 - reads as what the peer sent
    """The broker sent bytes that are not a valid MQTT packet: the connection must end."""


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
    "REASON_NAMES",
    "Ack",
    "Connack",
    "Disconnect",
    "MalformedPacket",
    "Packet",
    "PacketReader",
    "Pingresp",
    "Properties",
    "Publish",
    "Suback",
    "decode_properties",
    "reason_name",
]
