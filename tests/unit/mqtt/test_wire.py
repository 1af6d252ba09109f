"""bridge.mqtt.wire.Connection against a socket pair playing the broker: the in-flight window,
packet identifiers, partial writes, keepalive (explicit clock values, no sleeps) and EOF."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bridge.mqtt import packets
from bridge.mqtt.packets import Ack, Pingresp, check_topic, encode_ack, encode_publish
from bridge.mqtt.wire import Connection, ConnectionClosed

T0 = 1000.0


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    broker.settimeout(10)
    yield ours, broker
    ours.close()
    broker.close()


def _conn(sock: socket.socket, keepalive: float = 10.0) -> Connection:
    return Connection(sock, v5=True, keepalive=keepalive, now=T0)


def _publish(mid: int, payload: bytes = b"x") -> bytes:
    return encode_publish(check_topic("t"), payload, qos=1, mid=mid, properties=b"\x00")


def _mids_in(data: bytes) -> list[int]:
    """Packet identifiers of the QoS 1 PUBLISH packets in ``data`` (topic "t", v5)."""
    # The broker side is a client reading a PUBLISH stream: our reader decodes them.
    return [p.mid for p in packets.PacketReader(v5=True).feed(data)
            if isinstance(p, packets.Publish)]


# -- window (the broker's Receive Maximum) ----------------------------------------------------


def test_publishes_beyond_the_window_wait_and_go_out_in_order_as_acks_come(pair):
    conn = _conn(pair[0])
    conn.window = 2
    mids = [conn.next_mid() for _ in range(6)]
    assert mids == [1, 2, 3, 4, 5, 6]
    for mid in mids:
        conn.send_tracked(mid, _publish(mid))
    assert _mids_in(bytes(conn.out)) == [1, 2]
    assert conn.in_flight == {1, 2}
    conn.out.clear()

    assert conn.acknowledged(2)  # acks may come out of order: any one frees a slot
    assert _mids_in(bytes(conn.out)) == [3]
    assert not conn.acknowledged(2)  # twice: not ours any more
    assert not conn.acknowledged(99)  # never ours
    assert not conn.acknowledged(5)  # waiting, not in flight: the broker cannot ack it
    assert _mids_in(bytes(conn.out)) == [3]
    for mid in (1, 3, 4):
        assert conn.acknowledged(mid)
    assert _mids_in(bytes(conn.out)) == [3, 4, 5, 6]
    assert conn.in_flight == {5, 6}


def test_a_new_publish_waits_behind_those_already_waiting_even_when_a_slot_is_free(pair):
    conn = _conn(pair[0])
    conn.window = 1
    for mid in (conn.next_mid(), conn.next_mid()):
        conn.send_tracked(mid, _publish(mid))
    conn.in_flight.clear()  # as if the window grew: order must still hold
    conn.send_tracked(conn.next_mid(), _publish(3))
    assert _mids_in(bytes(conn.out)) == [1]


def test_ids_are_in_use_until_acknowledged_then_reused_after_a_wrap(pair):
    conn = _conn(pair[0])
    conn.window = 65535
    for _ in range(65534):
        mid = conn.next_mid()
        conn.send_tracked(mid, b"")
    assert mid == 65534
    assert conn.acknowledged(3)
    conn.release_mid(7)  # a refused publish gives its id back
    assert conn.next_mid() == 65535  # the last one before the wrap
    assert conn.next_mid() == 3  # wraps to 1; 1 and 2 are in use
    assert conn.next_mid() == 7
    with pytest.raises(ValueError, match="every packet identifier is in use"):
        conn.next_mid()
    assert conn.acknowledged(1)
    assert conn.next_mid() == 1  # never 0 (§2.2.1)


# -- bytes out: partial writes ----------------------------------------------------------------


def test_partial_writes_keep_every_byte_in_order(pair):
    ours, broker = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    broker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn = _conn(ours)
    conn.window = 65535
    expected = bytearray()
    for n in range(1, 3001):
        packet = _publish(conn.next_mid(), b"%06d" % n * 50)
        conn.send_tracked(n, packet)
        expected += packet
    assert bytes(conn.out) == expected
    received = bytearray()
    turns = blocked = 0
    while turns < 100_000:
        turns += 1
        pending = conn.flush(T0 + turns)
        blocked += pending
        if not pending and len(received) == len(expected):
            break
        received += broker.recv(65536)
    assert blocked > 0  # the socket buffer did fill: the test exercised partial writes
    assert received == expected
    assert _mids_in(bytes(received)) == list(range(1, 3001))
    assert conn.last_out > T0


# -- bytes in ---------------------------------------------------------------------------------


def test_read_returns_whole_packets_and_keeps_a_partial_one(pair):
    ours, broker = pair
    conn = _conn(ours)
    stream = encode_ack(packets.PUBACK, 1) + encode_ack(packets.PUBACK, 2) + b"\xd0"
    broker.sendall(stream)
    assert conn.read(T0 + 1) == [Ack(packets.PUBACK, 1), Ack(packets.PUBACK, 2)]
    assert conn.last_in == T0 + 1
    assert conn.read(T0 + 2) == []  # nothing there: no error, no wait
    broker.sendall(b"\x00")
    assert conn.read(T0 + 3) == [Pingresp()]


def test_eof_is_connection_closed(pair):
    ours, broker = pair
    conn = _conn(ours)
    broker.close()
    with pytest.raises(ConnectionClosed):
        conn.read(T0 + 1)


def test_packets_read_before_eof_are_not_lost(pair):
    # Exactly one full read (64 KiB) of acknowledgements, then the broker closes: the acks
    # must reach the link (a v5 DISCONNECT saying why would come the same way).
    ours, broker = pair
    conn = _conn(ours)
    stream = b"".join(encode_ack(packets.PUBACK, n) for n in range(1, 16385))
    assert len(stream) == 65536
    broker.sendall(stream)
    broker.close()
    got: list[packets.Packet] = []
    with pytest.raises(ConnectionClosed):
        for _ in range(10):
            got += conn.read(T0 + 1)
    assert got == [Ack(packets.PUBACK, n) for n in range(1, 16385)]


def test_garbage_is_malformed_packet(pair):
    ours, broker = pair
    conn = _conn(ours)
    broker.sendall(b"\x36\x05\x00\x01t\x00\x01")  # QoS 3
    with pytest.raises(packets.MalformedPacket):
        conn.read(T0 + 1)


# -- keepalive (§3.1.2.10) --------------------------------------------------------------------


def test_pingreq_after_quiet_time_then_dead_without_pingresp(pair):
    ours, broker = pair
    conn = _conn(ours, keepalive=10)
    assert conn.keepalive_due(T0 + 5) == T0 + 10
    assert not conn.out
    assert conn.keepalive_due(T0 + 10) == T0 + 20
    assert bytes(conn.out) == packets.PINGREQ_PACKET
    assert conn.flush(T0 + 10) is False
    assert broker.recv(16) == b"\xc0\x00"
    assert conn.keepalive_due(T0 + 15) == T0 + 20  # waiting for the answer: no second ping
    assert conn.out == b""
    assert conn.keepalive_due(T0 + 19.9) == T0 + 20
    assert conn.keepalive_due(T0 + 20) is None  # no PINGRESP within the keepalive: dead


def test_a_pingresp_in_time_keeps_the_connection_alive(pair):
    ours, broker = pair
    conn = _conn(ours, keepalive=10)
    assert conn.keepalive_due(T0 + 10) == T0 + 20
    conn.flush(T0 + 10)
    broker.sendall(b"\xd0\x00")
    assert conn.read(T0 + 12) == [Pingresp()]
    conn.ping_sent = None  # what MqttLink does on PINGRESP
    assert conn.keepalive_due(T0 + 19) == T0 + 20  # quiet since the PINGREQ went out
    assert conn.keepalive_due(T0 + 20) == T0 + 30
    assert bytes(conn.out) == packets.PINGREQ_PACKET


def test_traffic_both_ways_postpones_the_ping(pair):
    ours, broker = pair
    conn = _conn(ours, keepalive=10)
    conn.out += encode_ack(packets.PUBACK, 1)
    conn.flush(T0 + 8)
    broker.sendall(encode_ack(packets.PUBACK, 9))
    conn.read(T0 + 7)
    assert conn.keepalive_due(T0 + 10) == T0 + 17
    assert not conn.out


def test_a_silent_broker_gets_pinged_even_while_we_send(pair):
    # We publish all the time but hear nothing back: only a PINGREQ can tell it is alive.
    ours, _ = pair
    conn = _conn(ours, keepalive=10)
    conn.out += b"\x30\x03\x00\x01t"
    conn.flush(T0 + 9)
    assert conn.keepalive_due(T0 + 10) == T0 + 20
    assert bytes(conn.out) == packets.PINGREQ_PACKET


def test_keepalive_zero_never_pings(pair):
    conn = _conn(pair[0], keepalive=0)  # a broker's Server Keep Alive of 0 turns it off
    assert conn.keepalive_due(T0 + 1_000_000) == T0 + 1_000_000 + 60
    assert not conn.out
