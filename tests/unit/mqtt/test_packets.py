"""bridge.mqtt.packets byte for byte.

Expected bytes are written out by hand from the MQTT 3.1.1 (OASIS 2014) and 5.0 (OASIS 2019)
standards; section numbers are 5.0's unless said. ``test_paho_*`` capture what a paho client
writes to a socket we listen on, for the same packets: the same bytes prove paho's brokers
and ours read them alike.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from bridge.mqtt import packets
from bridge.mqtt.encoding import encode_publish_properties
from bridge.mqtt.packets import (
    Ack,
    Connack,
    Disconnect,
    MalformedPacket,
    PacketReader,
    Pingresp,
    Publish,
    Suback,
    Will,
    check_topic,
    decode_properties,
    encode_ack,
    encode_connect,
    encode_publish,
    encode_subscribe,
)
from tests.fakes.mqtt_wire import read_packet

H = bytes.fromhex

# -- CONNECT (§3.1) ---------------------------------------------------------------------------


def test_connect_v311_clean_session_no_credentials():
    # 10 | remaining 14 | "MQTT" level 4, flags 0x02 (clean), keepalive 60 | client id "c1"
    expected = H("10 0e 0004 4d515454 04 02 003c 0002 6331")
    assert encode_connect("c1", keepalive=60, v5=False) == expected


def test_connect_v5_clean_start_has_an_empty_property_block():
    expected = H("10 0f 0004 4d515454 05 02 003c 00 0002 6331")
    assert encode_connect("c1", keepalive=60, v5=True) == expected


def test_connect_v5_everything_will_credentials_no_clean_start_session_expiry():
    # flags: username 0x80 | password 0x40 | will retain 0x20 | will QoS 1 0x08 | will 0x04
    # (clean start off): 0xEC. Properties: Session Expiry 0x11 = 3600, Receive Maximum 0x21
    # = 10. Payload: client id, will properties (none), will topic, will payload, user, pass.
    expected = H(
        "10 24"
        "0004 4d515454 05 ec 001e"
        "08 11 00000e10 21 000a"
        "0002 6331"
        "00 0001 77 0001 78"
        "0001 75 0001 70"
    )
    packet = encode_connect(
        "c1", keepalive=30, v5=True, clean_start=False, session_expiry=3600,
        receive_maximum=10, username="u", password="p",
        will=Will("w", b"x", qos=1, retain=True))
    assert packet == expected


def test_connect_v311_will_qos2_no_retain_username_only():
    # 3.1.1 has no properties anywhere: no will property block either.
    # flags: username 0x80 | will QoS 2 0x10 | will 0x04 | clean 0x02 = 0x96
    expected = H("10 1a 0004 4d515454 04 96 0000 0002 6331 0003 772f74 0002 6f66 0001 75")
    packet = encode_connect("c1", keepalive=0, v5=False, username="u",
                            will=Will("w/t", b"of", qos=2))
    assert packet == expected


def test_connect_v311_clean_session_off_ignores_session_expiry():
    expected = H("10 0e 0004 4d515454 04 00 003c 0002 6331")
    assert encode_connect("c1", keepalive=60, v5=False, clean_start=False) == expected


def test_connect_v5_session_expiry_zero_is_not_sent():
    # Absent means 0 (§3.1.2.11.2): nothing to say.
    assert encode_connect("c1", keepalive=60, v5=True, session_expiry=0) == \
        encode_connect("c1", keepalive=60, v5=True)


# -- SUBSCRIBE (§3.8) -------------------------------------------------------------------------


def test_subscribe_v311_has_flags_0010_and_a_qos_byte_per_filter():
    expected = H("82 0e 0001 0003 612f23 01 0003 622f2b 00")
    assert encode_subscribe(1, [("a/#", 1), ("b/+", 0)], v5=False) == expected


def test_subscribe_v5_has_an_empty_property_block_and_options_bytes():
    expected = H("82 0a 1234 00 0004 612f622f 02")
    assert encode_subscribe(0x1234, [("a/b/", 2)], v5=True) == expected


# -- PUBLISH (§3.3) ---------------------------------------------------------------------------


def test_publish_qos0_v311_has_no_packet_identifier():
    assert encode_publish(check_topic("t"), b"hi", qos=0, mid=0) == H("30 05 0001 74 6869")


def test_publish_qos1_retain_v5_no_properties():
    expected = H("33 08 0001 74 000a 00 6869")
    packet = encode_publish(check_topic("t"), b"hi", qos=1, mid=10, retain=True,
                            properties=b"\x00")
    assert packet == expected


def test_publish_qos2_sets_bits_1_and_2():
    assert encode_publish(check_topic("t"), b"", qos=2, mid=1) == H("34 05 0001 74 0001")


def test_publish_v5_with_expiry_correlation_and_user_properties():
    props = encode_publish_properties([("k", "v"), ("k", "w")], correlation_data=b"\x01\x02",
                                      expiry_interval=290)
    # 0x02 Message Expiry (four byte int), 0x09 Correlation Data (binary), 0x26 User Property
    # (string pair), twice (§3.3.2.3.7: the same name may appear more than once), in order.
    block = H("18 02 00000122 09 0002 0102 26 0001 6b 0001 76 26 0001 6b 0001 77")
    assert props == block
    packet = encode_publish(check_topic("a/b"), b"P", qos=1, mid=2, properties=props)
    assert packet == H("32 21 0003 612f62 0002") + block + b"P"


@pytest.mark.parametrize(("remaining", "length_bytes"), [
    (0x7F, "7f"), (0x80, "8001"), (0x3FFF, "ff7f"), (0x4000, "808001"),
    (0x1FFFFF, "ffff7f"), (0x200000, "80808001"),
])
def test_publish_remaining_length_at_the_varint_boundaries(remaining, length_bytes):
    # §1.5.5: 7 bits a byte, low first, continuation bit 0x80. Topic "t" takes 3 bytes.
    payload = b"\xa5" * (remaining - 3)
    packet = encode_publish(check_topic("t"), payload, qos=0, mid=0)
    assert packet == b"\x30" + H(length_bytes) + H("0001 74") + payload


def test_publish_larger_than_mqtt_allows_is_a_value_error():
    class Huge(bytes):
        def __len__(self) -> int:
            return packets.MAX_REMAINING

    with pytest.raises(ValueError, match="larger than MQTT allows"):
        encode_publish(check_topic("t"), Huge(), qos=0, mid=0)


@pytest.mark.parametrize(("topic", "why"), [
    ("", "empty"), ("a/+/b", "wildcard"), ("a/#", "wildcard"), ("+", "wildcard"),
    ("a\0b", "NUL"), ("x" * 65536, "65,535"),
])
def test_check_topic_refuses_what_a_topic_name_must_not_be(topic, why):
    with pytest.raises(ValueError, match=why):
        check_topic(topic)


def test_check_topic_encodes_utf8_with_its_byte_length():
    assert check_topic("é/ü") == H("0005 c3a9 2f c3bc")


# -- acknowledgements, DISCONNECT, PINGREQ ----------------------------------------------------


@pytest.mark.parametrize(("kind", "expected"), [
    (packets.PUBACK, "40 02 0007"), (packets.PUBREC, "50 02 0007"),
    (packets.PUBREL, "62 02 0007"),  # §3.6.1: PUBREL's fixed header flags are 0010
    (packets.PUBCOMP, "70 02 0007"),
])
def test_acks_with_success_omit_the_reason_code(kind, expected):
    assert encode_ack(kind, 7) == H(expected)


def test_disconnect_and_pingreq():
    assert H("e0 00") == packets.DISCONNECT_PACKET  # normal disconnection, will dropped
    assert H("c0 00") == packets.PINGREQ_PACKET


# -- paho's bytes for the same packets --------------------------------------------------------


class _PahoCapture:
    """A paho client connected to a socket we listen on, driven without its thread."""

    def __init__(self, *, v5: bool, setup: Callable[[mqtt.Client], None] | None = None,
                 clean_session: bool = True, **connect: Any) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="c1",
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                                  clean_session=None if v5 else clean_session)
        if setup is not None:
            setup(self.client)
        port = self._listener.getsockname()[1]
        self.client.connect("127.0.0.1", port, **connect)
        self.server, _ = self._listener.accept()
        self.server.settimeout(10)
        self.connect_packet = read_packet(self.server)
        self._v5 = v5

    def accept_session(self) -> None:
        self.server.sendall(H("20 03 00 00 00") if self._v5 else H("20 02 00 00"))
        for _ in range(50):
            self.client.loop(timeout=0.1)
            if self.client.is_connected():
                return
        raise AssertionError("paho never took the CONNACK")

    def next_packet(self) -> bytes:
        self.client.loop_write()
        return read_packet(self.server)

    def close(self) -> None:
        sock = self.client.socket()
        if sock is not None:
            sock.close()
        self.server.close()
        self._listener.close()


@pytest.fixture
def paho_capture():
    made: list[_PahoCapture] = []

    def make(**kwargs: Any) -> _PahoCapture:
        capture = _PahoCapture(**kwargs)
        made.append(capture)
        return capture

    yield make
    for capture in made:
        capture.close()


@pytest.mark.parametrize("v5", [False, True])
def test_paho_connect_plain(paho_capture, v5):
    capture = paho_capture(v5=v5, keepalive=45)
    assert capture.connect_packet == encode_connect("c1", keepalive=45, v5=v5)


def test_paho_connect_v5_with_will_credentials_session_expiry_receive_maximum(paho_capture):
    def setup(client: mqtt.Client) -> None:
        client.username_pw_set("user", "secret")
        client.will_set("MagTek/Device/X/1/Status", b"disconnected", qos=1, retain=True)

    props = PahoProperties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 86400
    props.ReceiveMaximum = 20
    capture = paho_capture(v5=True, setup=setup, keepalive=15, clean_start=False,
                           properties=props)
    ours = encode_connect(
        "c1", keepalive=15, v5=True, clean_start=False, session_expiry=86400,
        receive_maximum=20, username="user", password="secret",
        will=Will("MagTek/Device/X/1/Status", b"disconnected", qos=1, retain=True))
    assert capture.connect_packet == ours


def test_paho_connect_v311_clean_session_off_with_will_and_credentials(paho_capture):
    def setup(client: mqtt.Client) -> None:
        client.username_pw_set("user", "secret")
        client.will_set("w", b"gone", qos=0)

    capture = paho_capture(v5=False, setup=setup, clean_session=False, keepalive=60)
    ours = encode_connect("c1", keepalive=60, v5=False, clean_start=False, username="user",
                          password="secret",
                          will=Will("w", b"gone", qos=0))
    assert capture.connect_packet == ours


@pytest.mark.parametrize("v5", [False, True])
@pytest.mark.parametrize("size", [0, 120, 125, 16_380, 20_000])
@pytest.mark.parametrize(("qos", "retain"), [(0, False), (1, True), (2, False)])
def test_paho_publish(paho_capture, v5, size, qos, retain):
    capture = paho_capture(v5=v5)
    capture.accept_session()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    info = capture.client.publish("MagTek/Device/DynaFlex/B1/MMSMessage", payload, qos=qos,
                                  retain=retain)
    ours = encode_publish(check_topic("MagTek/Device/DynaFlex/B1/MMSMessage"), payload,
                          qos=qos, mid=info.mid if qos else 0, retain=retain,
                          properties=b"\x00" if v5 else None)
    assert capture.next_packet() == ours


def test_paho_publish_v5_properties(paho_capture):
    capture = paho_capture(v5=True)
    capture.accept_session()
    props = PahoProperties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 290
    props.CorrelationData = b"\x00\xffcorr"
    props.UserProperty = [("boot_id", "0123"), ("seq", "42"), ("replayed", "true")]
    info = capture.client.publish("a/b", b"payload", qos=1, properties=props)
    ours = encode_publish(check_topic("a/b"), b"payload", qos=1, mid=info.mid,
                          properties=encode_publish_properties(
                              [("boot_id", "0123"), ("seq", "42"), ("replayed", "true")],
                              correlation_data=b"\x00\xffcorr", expiry_interval=290))
    assert capture.next_packet() == ours


@pytest.mark.parametrize("v5", [False, True])
def test_paho_subscribe(paho_capture, v5):
    capture = paho_capture(v5=v5)
    capture.accept_session()
    _, mid = capture.client.subscribe([("MagTek/Device/+/+/SendCommand", 1), ("x/#", 0)])
    ours = encode_subscribe(mid, [("MagTek/Device/+/+/SendCommand", 1), ("x/#", 0)], v5=v5)
    assert capture.next_packet() == ours


@pytest.mark.parametrize("v5", [False, True])
def test_paho_disconnect(paho_capture, v5):
    capture = paho_capture(v5=v5)
    capture.accept_session()
    capture.client.disconnect()
    assert read_packet(capture.server) == packets.DISCONNECT_PACKET


def test_paho_acks_for_an_inbound_qos1_and_qos2_publish(paho_capture):
    capture = paho_capture(v5=False)
    capture.accept_session()
    for sent, answer in [(H("32 05 0001 74 0102"), encode_ack(packets.PUBACK, 0x0102)),
                         (H("34 05 0001 74 0203"), encode_ack(packets.PUBREC, 0x0203)),
                         (H("62 02 0203"), encode_ack(packets.PUBCOMP, 0x0203))]:
        capture.server.sendall(sent)
        capture.client.loop(timeout=1.0)
        assert capture.next_packet() == answer


# -- decoding: every packet the broker sends ---------------------------------------------------


def _one(data: bytes, *, v5: bool = True) -> packets.Packet:
    got = PacketReader(v5=v5).feed(data)
    assert len(got) == 1
    return got[0]


def test_connack_v311_session_present_and_every_return_code():
    assert _one(H("20 02 01 00"), v5=False) == Connack(True, 0x00)
    # §3.2.2.3 (3.1.1) return codes 1-5, as the v5 reason codes that mean the same.
    for code, reason in [(1, 0x84), (2, 0x85), (3, 0x88), (4, 0x86), (5, 0x87), (9, 0x80)]:
        connack = _one(bytes((0x20, 2, 0, code)), v5=False)
        assert connack == Connack(False, reason)
        assert connack.reason >= 0x80


def test_connack_v5_properties_of_every_kind():
    block = H(
        "24 01"                    # Maximum QoS: byte
        "21 000a"                  # Receive Maximum: two byte integer
        "13 0078"                  # Server Keep Alive: two byte integer
        "27 00100000"              # Maximum Packet Size: four byte integer
        "12 0003 616263"           # Assigned Client Identifier: UTF-8 string
        "16 0002 00ff"             # Authentication Data: binary data
        "26 0001 61 0001 62"       # User Property: string pair, twice
        "26 0001 61 0001 63"
    )
    connack = _one(H("20") + bytes((3 + len(block),)) + H("00 00") + bytes((len(block),))
                   + block)
    assert connack == Connack(False, 0, {
        "MaximumQoS": 1, "ReceiveMaximum": 10, "ServerKeepAlive": 120,
        "MaximumPacketSize": 0x100000, "AssignedClientIdentifier": "abc",
        "AuthenticationData": b"\x00\xff", "UserProperty": [("a", "b"), ("a", "c")]})


def test_connack_v5_refusal_without_properties():
    assert _one(H("20 02 00 87")) == Connack(False, 0x87)
    assert packets.reason_name(0x87) == "Not authorized"


def test_publish_v5_with_a_variable_byte_integer_property():
    # Subscription Identifier 0x0B is a variable byte integer: 128 = 80 01.
    packet = H("3b 0f 0003 612f62 0005 05 0b 8001 01 00 7a7a")
    assert _one(packet) == Publish("a/b", b"zz", qos=1, retain=True, dup=True, mid=5,
                                   properties={"SubscriptionIdentifier": 128,
                                               "PayloadFormatIndicator": 0})


def test_publish_v311_qos0_and_qos2():
    assert _one(H("30 04 0001 74 21"), v5=False) == Publish("t", b"!", 0, False, False, 0)
    assert _one(H("34 06 0001 74 ffff 21"), v5=False) == Publish("t", b"!", 2, False, False,
                                                                  0xFFFF)


def test_publish_v5_response_topic_correlation_and_expiry():
    block = H("02 0000003c 08 0003 722f31 09 0003 010203")
    body = H("0001 74 0009") + bytes((len(block),)) + block + b"cmd"
    publish = _one(bytes((0x32, len(body))) + body)
    assert isinstance(publish, Publish)
    assert publish.properties == {"MessageExpiryInterval": 60, "ResponseTopic": "r/1",
                                  "CorrelationData": b"\x01\x02\x03"}
    assert publish.payload == b"cmd"


@pytest.mark.parametrize(("data", "expected"), [
    ("40 02 0102", Ack(packets.PUBACK, 0x0102)),
    ("40 03 0102 10", Ack(packets.PUBACK, 0x0102, 0x10)),  # v5 reason, no properties
    ("40 04 0102 97 00", Ack(packets.PUBACK, 0x0102, 0x97)),
    ("50 02 0003", Ack(packets.PUBREC, 3)),
    ("50 03 0003 80", Ack(packets.PUBREC, 3, 0x80)),
    ("62 02 0004", Ack(packets.PUBREL, 4)),
    ("70 02 0005", Ack(packets.PUBCOMP, 5)),
    ("70 03 0005 92", Ack(packets.PUBCOMP, 5, 0x92)),
    ("d0 00", Pingresp()),
])
def test_acks_and_pingresp(data, expected):
    assert _one(H(data)) == expected


def test_puback_with_reason_string_property():
    assert _one(H("40 0a 0001 97 06 1f 0003 6e6f21")) == Ack(packets.PUBACK, 1, 0x97)


def test_suback_v311_and_v5():
    assert _one(H("90 04 0007 01 80"), v5=False) == Suback(7, (1, 0x80))
    assert _one(H("90 09 0007 04 1f 0001 78 00 02")) == Suback(7, (0, 2))


def test_disconnect_v5_with_reason_and_properties_and_bare():
    assert _one(H("e0 00")) == Disconnect(0)
    assert _one(H("e0 01 8e")) == Disconnect(0x8E)
    assert _one(H("e0 08 9c 06 1c 0003 682e78")) == Disconnect(0x9C, {"ServerReference": "h.x"})


_STREAM = (
    H("20 03 00 00 00")
    + H("90 04 0001 00 01")
    + H("32 0a 0003 612f62 0005 00 6869") + H("40 02 0009")
    + H("30") + bytes((0x80 | (300 % 128), 300 // 128)) + H("0001 74 00") + b"p" * 296
    + H("d0 00") + H("e0 01 8b")
)


def test_several_packets_in_one_feed_come_out_in_order():
    got = PacketReader(v5=True).feed(_STREAM)
    assert [type(p).__name__ for p in got] == [
        "Connack", "Suback", "Publish", "Ack", "Publish", "Pingresp", "Disconnect"]
    assert got[4] == Publish("t", b"p" * 296, 0, False, False, 0)


def test_a_stream_split_at_every_byte_boundary_decodes_the_same():
    whole = PacketReader(v5=True).feed(_STREAM)
    for cut in range(len(_STREAM) + 1):
        reader = PacketReader(v5=True)
        got = reader.feed(_STREAM[:cut]) + reader.feed(_STREAM[cut:])
        assert got == whole, cut


def test_a_stream_fed_one_byte_at_a_time():
    reader = PacketReader(v5=True)
    got: list[packets.Packet] = []
    for byte in _STREAM:
        got += reader.feed(bytes((byte,)))
    assert got == PacketReader(v5=True).feed(_STREAM)


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, len(_STREAM)), max_size=12))
def test_any_split_decodes_the_same(cuts):
    reader = PacketReader(v5=True)
    got: list[packets.Packet] = []
    at = 0
    for cut in [*sorted(cuts), len(_STREAM)]:
        got += reader.feed(_STREAM[at:cut])
        at = cut
    assert got == PacketReader(v5=True).feed(_STREAM)


# -- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "why"), [
    ("30 ff ff ff ff 01", "longer than 4 bytes"),          # a 5-byte remaining length
    ("36 05 0001 74 0001", "QoS 3"),
    ("30 04 0002 ff fe", "UTF-8"),                         # topic not UTF-8
    ("30 03 0005 74", "truncated"),                        # topic longer than the packet
    ("30 01 00", "truncated"),
    ("32 04 0001 74 00", "cut short"),                     # packet identifier cut short
    ("20 01 00", "short CONNACK"),
    ("20 05 00 00 02 7f 00", "unknown property 0x7F"),
    ("20 05 00 00 05 21 00", "run past"),                 # property block past the packet
    ("20 05 00 00 02 21 00", "past its block"),            # a two-byte property cut short
    ("20 04 00 00 01 24", "past its block"),               # a byte property with no byte
    ("20 07 00 00 04 12 0005 61", "truncated string"),
    ("20 06 00 00 03 26 0000", "truncated string length"),  # user property without value
    ("20 09 00 00 06 1f 0002 c328 00", "UTF-8"),          # reason string not UTF-8
    ("40 01 00", "packet identifier"),
    ("90 02 0001", "short SUBACK"),
    ("10 02 0000", "unexpected packet type 0x10"),         # a CONNECT from the broker
    ("00 00", "unexpected packet type 0x00"),              # reserved
    ("f0 00", "unexpected packet type 0xF0"),              # AUTH: we never ask for it
    ("82 03 0001 00", "unexpected"),
    ("e0 03 00 05 11", "run past"),
])
def test_malformed_input_raises_malformed_packet(data, why):
    with pytest.raises(MalformedPacket, match=why):
        PacketReader(v5=True).feed(H(data))


def test_v311_publish_with_a_cut_packet_identifier_is_malformed():
    with pytest.raises(MalformedPacket):
        PacketReader(v5=False).feed(H("32 04 0001 74 00"))


def test_publish_qos1_with_packet_identifier_zero_is_malformed():
    # §2.2.1: a PUBLISH with QoS > 0 has a non-zero packet identifier.
    with pytest.raises(MalformedPacket, match="identifier"):
        PacketReader(v5=False).feed(H("32 05 0001 74 0000"))


def test_decode_properties_alone_on_truncated_input_raises_malformed_packet():
    for data in (H("05 02 0000"), H("02 24"), H("80"), H("03 26 0001"), H("01 24"),
                 H("02 02 00")):
        with pytest.raises(MalformedPacket):
            decode_properties(data, 0)


@settings(max_examples=1500, deadline=None)
@given(data=st.binary(max_size=64), v5=st.booleans())
def test_random_bytes_only_ever_raise_malformed_packet(data, v5):
    reader = PacketReader(v5=v5)
    with contextlib.suppress(MalformedPacket):
        reader.feed(data)


_KIND = st.sampled_from([0x20, 0x30, 0x32, 0x34, 0x3B, 0x40, 0x50, 0x62, 0x70, 0x90, 0xD0,
                         0xE0])


@settings(max_examples=1500, deadline=None)
@given(first=_KIND, body=st.binary(max_size=40), v5=st.booleans())
def test_random_bodies_behind_a_valid_header_only_ever_raise_malformed_packet(first, body, v5):
    # Random bytes rarely get past the fixed header; these reach every decoder.
    with contextlib.suppress(MalformedPacket):
        PacketReader(v5=v5).feed(bytes((first, len(body))) + body)


# -- what the specs call malformed that a lenient decoder would pass ---------------------------


@pytest.mark.parametrize("data", [
    "41 02 0001",      # PUBACK with reserved flags set (§2.1.3: must be 0000)
    "51 02 0001",      # PUBREC
    "60 02 0001",      # PUBREL must carry 0010 (§3.6.1)
    "71 02 0001",      # PUBCOMP
    "21 02 00 00",     # CONNACK
    "92 03 0001 00",   # SUBACK
    "d1 00",           # PINGRESP
    "e8 00",           # DISCONNECT
])
def test_reserved_fixed_header_flags_are_malformed(data):
    with pytest.raises(MalformedPacket, match="flags"):
        PacketReader(v5=True).feed(H(data))


@pytest.mark.parametrize("v5", [False, True])
def test_a_string_with_nul_is_malformed(v5):
    # §1.5.4 [MQTT-1.5.4-2]: a UTF-8 string must not hold U+0000.
    body = H("0003 61 00 62") + (b"\x00" if v5 else b"") + b"p"
    with pytest.raises(MalformedPacket, match="U\\+0000"):
        PacketReader(v5=v5).feed(bytes((0x30, len(body))) + body)


@pytest.mark.parametrize("v5", [False, True])
def test_an_inbound_publish_with_an_empty_topic_is_malformed(v5):
    # §4.7.3: a topic name has at least one character; with v5 an empty one needs a Topic
    # Alias, which we never allow (no Topic Alias Maximum in our CONNECT: 0).
    body = H("0000") + (b"\x00" if v5 else b"") + b"p"
    with pytest.raises(MalformedPacket, match="empty topic"):
        PacketReader(v5=v5).feed(bytes((0x30, len(body))) + body)


def test_an_inbound_topic_alias_we_never_allowed_is_malformed():
    body = H("0001 74 03 23 0001") + b"p"  # Topic Alias 1 (§3.3.2.3.4)
    with pytest.raises(MalformedPacket, match="Topic Alias"):
        PacketReader(v5=True).feed(bytes((0x30, len(body))) + body)


def test_an_inbound_topic_with_a_wildcard_is_malformed():
    # [MQTT-3.3.2-2]: the topic name in a PUBLISH must not contain wildcards.
    with pytest.raises(MalformedPacket, match="wildcard"):
        PacketReader(v5=False).feed(H("30 06 0003 612f23 70"))
