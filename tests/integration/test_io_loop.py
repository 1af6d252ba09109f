"""MqttLink on the I/O loop against a real broker: a bug in a callback ends that connection
only (a fresh client follows), and the loop goes on driving it."""

from __future__ import annotations

from bridge.mqtt.link import LinkOptions, MqttLink, Publication
from bridge.mqtt.loop import IoLoop
from tests.integration.harness import wait_until


def test_a_callback_bug_drops_the_connection_and_a_fresh_one_follows(broker):
    loop = IoLoop()
    loop.start()
    calls: list[int] = []

    def on_ready(link: MqttLink) -> None:
        calls.append(link.generation)
        if len(calls) == 1:
            raise RuntimeError("bug in a ready hook")

    link = MqttLink(LinkOptions(host=broker.host, port=broker.port, reconnect_min_delay=0.05,
                                reconnect_max_delay=0.1),
                    client_id="test-callback-bug", name="bridge", on_ready=on_ready,
                    births=[Publication("test/io/Status", b"up", retain=True)], loop=loop)
    try:
        link.start()
        assert wait_until(lambda: len(calls) >= 2 and link.ready.is_set(), 20)
        assert link.generation >= 2  # a second connection, on a fresh client
        assert len(link.reconnect_delays) >= 1
    finally:
        link.stop()
        loop.stop()
    assert not link.connected.is_set()


def test_publishes_made_before_the_connection_go_out_after_connack(broker, probe_factory):
    probe = probe_factory("test/io/held/#")
    loop = IoLoop()
    loop.start()
    link = MqttLink(LinkOptions(host=broker.host, port=broker.port), client_id="test-held",
                    name="bridge", loop=loop)
    try:
        for n in range(3):  # before start(): no client, no connection yet
            assert link.publish(f"test/io/held/{n}", b"%d" % n, qos=1, retain=True) == 0
        link.start()
        assert link.wait_ready(15)
        for n in range(3):
            message = probe.wait_for(f"test/io/held/{n}", timeout=10)
            assert message.payload == b"%d" % n
    finally:
        link.stop()
        loop.stop()
