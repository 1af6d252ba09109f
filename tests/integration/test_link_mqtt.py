"""MqttLink (our own MQTT client) against a real Mosquitto: manual acknowledgements proven by
the broker's redelivery, QoS 2 both ways, the broker's Maximum Packet Size and Receive
Maximum, refused topics, and keepalive through a black-holed connection."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from bridge.metrics import Metrics
from bridge.mqtt import packets
from bridge.mqtt.link import LinkOptions, MqttLink
from bridge.mqtt.options import InboundMessage
from tests.integration.harness import on_loop, wait_until
from tests.integration.support.relay import TcpRelay

WAIT = 30.0  # generous: the machine is shared


def _options(host: str, port: int, **overrides: Any) -> LinkOptions:
    return LinkOptions(host=host, port=port, reconnect_min_delay=0.05, reconnect_max_delay=0.2,
                       **overrides)


def _failures(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("magtek_bridge_mqtt_publish_failures_total")
    return value or 0.0


# -- manual acknowledgement, proven by redelivery ------------------------------------------------


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_manual_ack_acknowledges_in_arrival_order_and_only_when_told(broker, probe_factory,
                                                                     loop, protocol):
    # 3.1.1 has no session expiry: clean session off keeps the session (mosquitto's default
    # keeps it until the client comes back).
    probe = probe_factory()
    client_id = "test-manual-ack"

    def session() -> tuple[MqttLink, list[InboundMessage]]:
        got: list[InboundMessage] = []
        link = MqttLink(_options(broker.host, broker.port, protocol=protocol),
                        client_id=client_id, name="bridge", subscriptions=[("test/ack/#", 1)],
                        on_message=got.append, loop=loop, session_expiry=300,
                        manual_ack=True)
        link.start()
        assert link.wait_ready(WAIT)
        return link, got

    def seen(got: list[InboundMessage]) -> list[tuple[bytes, bool]]:
        return [(m.payload, m.duplicate) for m in got]

    link, got = session()
    for n in (1, 2, 3):
        probe.publish(f"test/ack/{n}", b"m%d" % n, qos=1)
    assert wait_until(lambda: len(got) == 3, WAIT), seen(got)
    assert seen(got) == [(b"m1", False), (b"m2", False), (b"m3", False)]
    got[2].ack()  # handled out of order: nothing may go out while m1 is not done
    got[1].ack()
    link.stop()  # clean DISCONNECT: the session (expiry 300 s) keeps the unacked messages

    link, got = session()
    assert wait_until(lambda: len(got) == 3, WAIT), seen(got)
    # All three again, marked duplicate: m2 and m3 were held back behind m1.
    assert seen(got) == [(b"m1", True), (b"m2", True), (b"m3", True)]
    got[0].ack()
    link.stop()

    link, got = session()
    assert wait_until(lambda: len(got) == 2, WAIT), seen(got)
    assert seen(got) == [(b"m2", True), (b"m3", True)]  # m1's ack reached the broker
    got[1].ack()
    got[0].ack()  # m2 then m3 go out together
    link.stop()

    link, got = session()
    try:
        probe.publish("test/ack/marker", b"marker", qos=1)
        # Redeliveries come before anything new: the marker first means none was left.
        assert wait_until(lambda: len(got) >= 1, WAIT)
        assert seen(got)[0] == (b"marker", False)
        got[0].ack()
    finally:
        link.stop()


def test_without_manual_ack_messages_are_acknowledged_on_delivery(broker, probe_factory, loop):
    probe = probe_factory()
    got: list[InboundMessage] = []

    def session() -> MqttLink:
        link = MqttLink(_options(broker.host, broker.port), client_id="test-auto-ack",
                        name="bridge", subscriptions=[("test/auto/#", 1)],
                        on_message=got.append, loop=loop, session_expiry=300)
        link.start()
        assert link.wait_ready(WAIT)
        return link

    link = session()
    probe.publish("test/auto/1", b"one", qos=1)
    assert wait_until(lambda: len(got) == 1, WAIT)
    assert got[0].ack is None  # nothing to call: acknowledged already
    link.stop()
    link = session()
    try:
        probe.publish("test/auto/2", b"two", qos=1)
        assert wait_until(lambda: len(got) == 2, WAIT)
        assert [m.payload for m in got] == [b"one", b"two"]  # "one" never came back
    finally:
        link.stop()


# -- QoS 2 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_qos2_inbound_is_delivered_once_and_outbound_completes(broker, probe_factory, loop,
                                                               protocol):
    probe = probe_factory("test/q2/out")
    got: list[InboundMessage] = []
    published: list[tuple[int, str | None]] = []
    link = MqttLink(_options(broker.host, broker.port, protocol=protocol),
                    client_id="test-qos2", name="bridge",
                    subscriptions=[("test/q2/in/#", 2)], on_message=got.append, loop=loop,
                    on_published=lambda _l, mid, failure: published.append((mid, failure)))
    try:
        link.start()
        assert link.wait_ready(WAIT)
        probe.publish("test/q2/in/a", b"exactly once", qos=2)
        probe.publish("test/q2/in/marker", b"after", qos=1)
        assert wait_until(lambda: any(m.payload == b"after" for m in got), WAIT)
        assert [(m.payload, m.qos) for m in got] == [(b"exactly once", 2), (b"after", 1)]

        mid = on_loop(loop, lambda: link.publish("test/q2/out", b"q2 out", qos=2))
        assert mid
        assert wait_until(lambda: published, WAIT)
        assert published == [(mid, None)]  # PUBREC, PUBREL, PUBCOMP: done
        assert probe.wait_for("test/q2/out", timeout=WAIT).payload == b"q2 out"
        assert link.generation == 1
    finally:
        link.stop()


# -- the broker's limits ----------------------------------------------------------------------


def test_a_publish_over_the_brokers_maximum_packet_size_is_refused_not_sent(
        mosquitto_factory, probe_factory, loop):
    broker = mosquitto_factory(extra="max_packet_size 1000\n")
    probe = probe_factory("test/big/#", broker=broker)
    metrics = Metrics(process_metrics=False)
    link = MqttLink(_options(broker.host, broker.port), client_id="test-max-packet",
                    name="bridge", loop=loop, metrics=metrics)
    try:
        link.start()
        assert link.wait_ready(WAIT)
        assert link.max_packet_size == 1000  # from the CONNACK
        # "test/big" QoS 1 on v5: 1 + 2 (remaining length) + 2 + 8 + 2 + 1 (no properties)
        # + payload: 984 bytes of payload make exactly 1000.
        assert on_loop(loop, lambda: link.publish("test/big", b"a" * 985, qos=1)) is None
        assert _failures(metrics) == 1
        assert on_loop(loop, lambda: link.publish("test/big", b"b" * 984, qos=1))
        message = probe.wait_for("test/big", timeout=WAIT)
        assert message.payload == b"b" * 984  # the largest allowed went through
        assert link.connected.is_set()
        assert link.generation == 1  # the refused one never reached the broker
    finally:
        link.stop()


def test_the_brokers_receive_maximum_holds_publishes_back_in_order(
        mosquitto_factory, probe_factory, loop):
    broker = mosquitto_factory(extra="max_inflight_messages 2\n")
    # The broker does enforce it: a raw burst of QoS 2 over it gets "Quota exceeded".
    assert _raw_qos2_burst_reasons(broker.host, broker.port, 6).count(0x97) >= 1
    probe = probe_factory("test/window/#", broker=broker)
    published: list[tuple[int, str | None]] = []
    link = MqttLink(_options(broker.host, broker.port, max_inflight=20),
                    client_id="test-window", name="bridge", loop=loop,
                    on_published=lambda _l, mid, failure: published.append((mid, failure)))
    count = 40
    try:
        link.start()
        assert link.wait_ready(WAIT)

        def burst() -> list[int | None]:  # one loop turn: all queued before any ack
            return [link.publish(f"test/window/{n}", b"%d" % n, qos=2) for n in range(count)]

        mids = on_loop(loop, burst)
        assert all(mids)
        assert wait_until(lambda: len(published) == count, WAIT), published
        assert [failure for _, failure in published] == [None] * count
        assert sorted(mid for mid, _ in published) == sorted(mids)  # type: ignore[type-var]
        for n in range(count):
            assert probe.wait_for(f"test/window/{n}", timeout=WAIT).payload == b"%d" % n
        assert link.generation == 1
    finally:
        link.stop()


def _raw_qos2_burst_reasons(host: str, port: int, count: int) -> list[int]:
    """PUBREC reason codes for ``count`` QoS 2 publishes written at once, ignoring Receive
    Maximum (what a client without a window does)."""
    with socket.create_connection((host, port), timeout=WAIT) as sock:
        reader = packets.PacketReader(v5=True)
        sock.sendall(packets.encode_connect("test-raw-burst", keepalive=30, v5=True))
        got: list[packets.Packet] = []
        while not got:
            got += reader.feed(sock.recv(4096))
        topic = packets.check_topic("test/raw")
        sock.sendall(b"".join(packets.encode_publish(topic, b"x", qos=2, mid=mid,
                                                     properties=b"\x00")
                              for mid in range(1, count + 1)))
        recs: list[int] = []
        while len(recs) < count:
            data = sock.recv(4096)
            assert data, "the broker closed the connection"
            recs += [p.reason for p in reader.feed(data)
                     if isinstance(p, packets.Ack) and p.kind == packets.PUBREC]
        sock.sendall(packets.DISCONNECT_PACKET)
        return recs


@pytest.mark.parametrize("topic", ["", "test/+/x", "test/#", "+", "a\0b"])
def test_an_invalid_topic_is_refused_and_counted_without_a_crash(broker, probe_factory, loop,
                                                                 topic):
    probe = probe_factory("test/valid")
    metrics = Metrics(process_metrics=False)
    link = MqttLink(_options(broker.host, broker.port), client_id="test-bad-topic",
                    name="bridge", loop=loop, metrics=metrics)
    try:
        link.start()
        assert link.wait_ready(WAIT)
        assert on_loop(loop, lambda: link.publish(topic, b"nope", qos=1)) is None
        assert on_loop(loop, lambda: link.publish(topic, b"nope", qos=0)) is None
        assert _failures(metrics) == 2
        assert link.publish(topic, b"from another thread", qos=1) == 0  # handed over
        assert on_loop(loop, lambda: link.publish("test/valid", b"fine", qos=1))
        assert probe.wait_for("test/valid", timeout=WAIT).payload == b"fine"
        assert _failures(metrics) == 3
        assert link.connected.is_set() and link.generation == 1
    finally:
        link.stop()


# -- keepalive --------------------------------------------------------------------------------


def test_keepalive_notices_a_black_holed_connection_and_reconnects_after(broker, loop):
    with TcpRelay(broker.host, broker.port) as proxy:
        link = MqttLink(_options(proxy.host, proxy.port, keepalive=2),
                        client_id="test-blackhole", name="bridge", loop=loop)
        try:
            link.start()
            assert link.wait_ready(WAIT)
            proxy.blackhole()  # no FIN, no RST: only a missing PINGRESP can tell
            assert wait_until(lambda: not link.connected.is_set(), WAIT)
            assert link.last_error is not None and "keepalive" in link.last_error
            proxy.heal()
            assert wait_until(lambda: link.ready.is_set() and link.generation >= 2, WAIT)
        finally:
            link.stop()
