"""lazy_acks (reader sessions): a stream's PUBACKs are read on the I/O loop's turns, not each
on a wake-up of its own. Every acknowledgement still arrives, also when no further turn
comes (within ACK_COLLECT), and a message for the session is read at once when asked
(``read_now``: the bridge's own session saw a command for it)."""

from __future__ import annotations

import threading

from bridge.mqtt.link import LinkOptions, MqttLink
from bridge.mqtt.options import InboundMessage
from tests.integration.harness import on_loop, wait_until

WAIT = 30.0


def test_every_ack_of_a_burst_arrives_with_no_further_turn(broker, loop):
    acked: list[int] = []
    link = MqttLink(LinkOptions(host=broker.host, port=broker.port), client_id="lazy-acks",
                    loop=loop, lazy_acks=True,
                    on_published=lambda _link, mid, failure: acked.append(mid))
    link.start()
    try:
        assert link.wait_ready(WAIT)
        mids = on_loop(loop, lambda: [link.publish(f"lazy/{n}", b"x", qos=1)
                                      for n in range(5)])
        assert all(mids)
        # Nothing else happens on the loop: only the collection deadline reads these.
        assert wait_until(lambda: sorted(acked) == sorted(mids), WAIT), (acked, mids)
    finally:
        link.stop()


def test_read_now_takes_a_message_while_acks_are_read_lazily(broker, probe_factory, loop):
    got: list[InboundMessage] = []
    link = MqttLink(LinkOptions(host=broker.host, port=broker.port), client_id="lazy-cmd",
                    loop=loop, lazy_acks=True, subscriptions=[("lazy/cmd", 1)],
                    on_message=got.append)
    link.start()
    probe = probe_factory("lazy/none")
    try:
        assert link.wait_ready(WAIT)
        # A stream keeps one message in flight: the socket is not watched meanwhile.
        stop = threading.Event()

        def stream() -> None:
            if not stop.is_set():
                link.publish("lazy/stream", b"s", qos=1)
                loop.call_later(0.002, stream)

        loop.call_soon(stream)
        probe.publish("lazy/cmd", b"command", qos=1)
        loop.call_later(0.001, link.read_now)
        assert wait_until(lambda: [m.payload for m in got] == [b"command"], WAIT)
        stop.set()
    finally:
        link.stop()
