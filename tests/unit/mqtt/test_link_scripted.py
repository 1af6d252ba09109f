"""MqttLink against a scripted broker on a loopback socket: the broker behaviour Mosquitto
cannot be made to show on demand (a DUP resend before PUBREL, a session resumed half way
through a QoS 2 delivery, Server Keep Alive, a v5 DISCONNECT, 3.1.1 refusals).

The test thread plays the broker, one packet at a time, with bounded blocking reads."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import structlog.testing

from bridge.mqtt import packets
from bridge.mqtt.link import LinkOptions, MqttLink
from bridge.mqtt.loop import IoLoop
from bridge.mqtt.options import InboundMessage
from tests.fakes.mqtt_wire import read_packet
from tests.integration.harness import wait_until

H = bytes.fromhex
WAIT = 20.0


class Peer:
    """The broker's end of one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(WAIT)

    def packet(self) -> bytes:
        """The next whole packet the link sent."""
        return read_packet(self.sock)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def handshake(self, connack: bytes = H("20 03 00 00 00")) -> bytes:
        """Read CONNECT, answer ``connack``; SUBSCRIBE answered too. Returns the CONNECT."""
        connect = self.packet()
        assert connect[0] == packets.CONNECT
        self.send(connack)
        return connect

    def subscribed(self) -> None:
        subscribe = self.packet()
        assert subscribe[0] == packets.SUBSCRIBE | 0x02
        mid = subscribe[2:4] if subscribe[1] < 0x80 else subscribe[3:5]
        self.send(H("90 04") + mid + H("00 02"))

    def close(self) -> None:
        self.sock.close()


class ScriptedBroker:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(WAIT)
        self.port = self.listener.getsockname()[1]
        self.peers: list[Peer] = []

    def accept(self) -> Peer:
        sock, _ = self.listener.accept()
        peer = Peer(sock)
        self.peers.append(peer)
        return peer

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedBroker]:
    broker = ScriptedBroker()
    yield broker
    broker.close()


def _link(scripted: ScriptedBroker, loop: IoLoop, **kwargs: Any) -> MqttLink:
    options = {"reconnect_min_delay": 0.05, "reconnect_max_delay": 0.1,
               **kwargs.pop("options", {})}
    return MqttLink(LinkOptions(host="127.0.0.1", port=scripted.port, **options),
                    client_id="scripted", name="bridge", loop=loop, **kwargs)


def _qos2_publish(mid: int, *, dup: bool = False) -> bytes:
    return (H("3c" if dup else "34") + H("09 0003 632f31") + mid.to_bytes(2, "big")
            + H("00") + b"x")


def test_qos2_resent_with_dup_before_pubrel_is_delivered_once(scripted, loop):
    got: list[InboundMessage] = []
    link = _link(scripted, loop, subscriptions=[("c/#", 2)], on_message=got.append)
    link.start()
    try:
        peer = scripted.accept()
        peer.handshake()
        peer.subscribed()
        assert link.wait_ready(WAIT)
        peer.send(_qos2_publish(7))
        assert peer.packet() == H("50 02 0007")  # PUBREC
        peer.send(_qos2_publish(7, dup=True))  # our PUBREC "lost": the broker sends again
        assert peer.packet() == H("50 02 0007")
        peer.send(H("62 02 0007"))  # PUBREL
        assert peer.packet() == H("70 02 0007")  # PUBCOMP
        assert [(m.payload, m.qos) for m in got] == [(b"x", 2)]
    finally:
        link.stop()


def test_qos2_state_survives_a_resumed_session_and_goes_with_a_new_one(scripted, loop):
    # §4.3.3 / §4.4: a resumed session (Session Present) continues a QoS 2 delivery; the
    # receiver keeps the packet identifier until PUBREL, across the reconnect.
    got: list[InboundMessage] = []
    link = _link(scripted, loop, subscriptions=[("c/#", 2)], on_message=got.append,
                 session_expiry=300)
    link.start()
    try:
        peer = scripted.accept()
        connect = peer.handshake()
        assert connect[9] & 0x02 == 0  # clean start off
        peer.subscribed()
        assert link.wait_ready(WAIT)
        peer.send(_qos2_publish(7))
        assert peer.packet() == H("50 02 0007")
        peer.close()  # gone before our PUBREC reached the broker

        peer = scripted.accept()
        peer.handshake(H("20 03 01 00 00"))  # session present
        peer.send(_qos2_publish(7, dup=True))
        peer.subscribed()
        assert peer.packet() == H("50 02 0007")
        peer.send(H("62 02 0007"))
        assert peer.packet() == H("70 02 0007")
        assert [m.payload for m in got] == [b"x"]  # once, not twice

        peer.send(_qos2_publish(8))  # and the next one still arrives
        assert peer.packet() == H("50 02 0008")
        peer.close()

        peer = scripted.accept()
        peer.handshake(H("20 03 00 00 00"))  # a new session: nothing carried over
        peer.subscribed()
        peer.send(_qos2_publish(8))
        assert peer.packet() == H("50 02 0008")
        assert wait_until(lambda: len(got) == 3, WAIT)
        assert [m.payload for m in got] == [b"x", b"x", b"x"]
    finally:
        link.stop()


def test_server_keep_alive_replaces_ours(scripted, loop):
    link = _link(scripted, loop, options={"keepalive": 600})
    link.start()
    try:
        peer = scripted.accept()
        connect = peer.handshake(H("20 06 00 00 03 13 0001"))  # Server Keep Alive: 1 s
        assert int.from_bytes(connect[10:12], "big") == 300  # we asked for 300 s
        assert link.wait_ready(WAIT)
        # Ours would ping after 300 s; the broker's 1 s rules (§3.2.2.3.14).
        assert peer.packet() == packets.PINGREQ_PACKET
        peer.send(H("d0 00"))
        assert peer.packet() == packets.PINGREQ_PACKET
        assert link.connected.is_set()
    finally:
        link.stop()


def test_a_v5_disconnect_from_the_broker_is_reported_with_its_reason(scripted, loop):
    link = _link(scripted, loop)
    link.start()
    try:
        peer = scripted.accept()
        peer.handshake()
        assert link.wait_ready(WAIT)
        peer.send(H("e0 01 8e"))  # Session taken over, then the broker closes at once
        peer.close()
        assert wait_until(lambda: not link.connected.is_set(), WAIT)
        assert "Session taken over" in (link.last_error or "")
        peer = scripted.accept()  # and it comes back
        peer.handshake()
        assert link.wait_ready(WAIT)
    finally:
        link.stop()


@pytest.mark.parametrize(("code", "name"), [
    (1, "Unsupported protocol version"), (2, "Client identifier not valid"),
    (3, "Server unavailable"), (4, "Bad user name or password"), (5, "Not authorized"),
])
def test_v311_connack_refusals_are_named(scripted, loop, code, name):
    link = _link(scripted, loop, options={"protocol": "3.1.1"})
    link.start()
    try:
        peer = scripted.accept()
        connect = peer.handshake(bytes((0x20, 2, 0, code)))
        assert connect[8] == 4  # protocol level 4: MQTT 3.1.1
        assert wait_until(lambda: link.last_error is not None, WAIT)
        assert link.last_error == f"broker refused the connection: {name}"
        assert not link.connected.is_set()
        scripted.accept().handshake(H("20 02 00 00"))  # it tries again, and gets in
        assert link.wait_ready(WAIT)
    finally:
        link.stop()


def test_a_refused_puback_reaches_on_published_with_its_reason(scripted, loop):
    published: list[tuple[int, str | None]] = []
    link = _link(scripted, loop,
                 on_published=lambda _l, mid, failure: published.append((mid, failure)))
    link.start()
    try:
        peer = scripted.accept()
        peer.handshake()
        assert link.wait_ready(WAIT)
        link.publish("a/b", b"1", qos=1)
        link.publish("a/b", b"2", qos=1)
        first, second = peer.packet(), peer.packet()
        mid1, mid2 = first[7:9], second[7:9]
        peer.send(H("40 03") + mid1 + H("97") + H("40 02") + mid2)
        assert wait_until(lambda: len(published) == 2, WAIT)
        assert published == [(int.from_bytes(mid1, "big"), "Quota exceeded"),
                             (int.from_bytes(mid2, "big"), None)]
    finally:
        link.stop()


def test_the_connected_log_says_whether_the_broker_resumed_the_session(scripted, loop):
    # With session_expiry, "session_present=False" after a reconnect tells an operator that
    # what the broker had queued for us is gone (a broker restart without persistence).
    with structlog.testing.capture_logs() as events:
        link = _link(scripted, loop, session_expiry=300)
        link.start()
        try:
            peer = scripted.accept()
            peer.handshake(H("20 03 00 00 00"))
            assert link.wait_ready(WAIT)
            peer.close()
            peer = scripted.accept()
            peer.handshake(H("20 03 01 00 00"))
            assert wait_until(lambda: link.generation == 2 and link.ready.is_set(), WAIT)
        finally:
            link.stop()
    connected = [e for e in events if e["event"] == "mqtt_connected"]
    assert [e.get("session_present") for e in connected] == [False, True]


def test_a_broker_that_ends_each_connection_at_once_meets_a_growing_backoff(scripted, loop):
    # Session taken over, a setting the broker refuses...: reconnecting at the minimum delay
    # after every good CONNACK would hammer it forever. Only a lasting connection starts over.
    link = _link(scripted, loop, options={"reconnect_min_delay": 0.02,
                                          "reconnect_max_delay": 0.64})
    link.start()
    try:
        for _ in range(6):
            peer = scripted.accept()
            peer.handshake()
            assert wait_until(link.connected.is_set, WAIT)
            peer.send(H("e0 01 8e"))  # Session taken over
            peer.close()
            assert wait_until(lambda: not link.connected.is_set(), WAIT)
        delays = list(link.reconnect_delays)[-6:]
        assert len(delays) == 6
        assert max(delays[-2:]) > 0.04, delays  # beyond [min, 2 x min]: it has grown
    finally:
        link.stop()


def test_publishes_respect_the_brokers_maximum_qos_and_retain_available(scripted, loop):
    link = _link(scripted, loop)
    link.start()
    try:
        peer = scripted.accept()
        # CONNACK, properties: Maximum QoS 0 (0x24), Retain Available 0 (0x25)
        peer.handshake(H("20 07 00 00 04 24 00 25 00"))
        assert link.wait_ready(WAIT)
        loop.call_soon(lambda: link.publish("s/1", b"x", qos=1, retain=True))
        publish = peer.packet()
        assert publish[0] == 0x30  # QoS 0, not retained: what this broker takes
        assert link.connected.is_set()
    finally:
        link.stop()
