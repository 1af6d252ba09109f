"""lazy_acks (reader sessions): a stream's PUBACKs are read on the I/O loop's turns, not each
on a wake-up of its own. Every acknowledgement still arrives, also when no further turn
comes (within ACK_COLLECT), and a message for the session is read at once when asked
(``read_now``: the bridge's own session saw a command for it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import bridge.mqtt.link as link_module
import bridge.mqtt.loop as loop_module
from bridge.mqtt.link import LinkOptions, MqttLink
from bridge.mqtt.loop import IoLoop
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


class _WatchCountingLoop(IoLoop):
    """Records what the link asks the selector to watch (a system call each): the events
    (0: unwatched) and how many acknowledgements had arrived by then."""

    def __init__(self, acknowledged: Callable[[], int]) -> None:
        super().__init__(name="test-io-watch")
        self.acknowledged = acknowledged
        self.watches: list[tuple[int, int]] = []

    def register(self, sock: object, events: int, handler: Callable[[int], None]) -> None:
        self.watches.append((events, self.acknowledged()))
        super().register(sock, events, handler)

    def unregister(self, sock: object) -> None:
        self.watches.append((0, self.acknowledged()))
        super().unregister(sock)


def test_a_burst_on_top_of_unread_acks_keeps_reading_lazily(
        mosquitto_factory, probe_factory, monkeypatch):
    # Receive Maximum 20: two bursts of 5 with the first's acknowledgements unread make 10
    # in flight, half the window. The acknowledgements that came while unwatched are read
    # first, so the second burst leaves 5 in flight and the socket stays unwatched.
    broker = mosquitto_factory(extra="max_inflight_messages 20\n")
    acked: list[int] = []
    io = _WatchCountingLoop(lambda: len(acked))
    io.start()
    link = MqttLink(LinkOptions(host=broker.host, port=broker.port), client_id="lazy-burst",
                    loop=io, lazy_acks=True,
                    on_published=lambda _link, mid, failure: acked.append(mid))
    probe = probe_factory("lazy/burst/#", broker=broker)
    try:
        link.start()
        assert link.wait_ready(WAIT)
        # No turn between the bursts from here: no timed read, no idle turn.
        monkeypatch.setattr(link_module, "ACK_COLLECT", 60.0)
        monkeypatch.setattr(loop_module, "MAX_SLEEP", 60.0)
        on_loop(io, lambda: None)  # a turn that sleeps by the new rules
        first = on_loop(io, lambda: [link.publish(f"lazy/burst/{n}", b"x", qos=1)
                                     for n in range(5)])
        # In flight, acknowledgements unread: unwatched (observed from here: another turn
        # would read them).
        assert wait_until(lambda: io.watches[-1:] == [(0, 0)], WAIT), io.watches
        for n in range(5):  # the broker has them all, so their acknowledgements are sent
            probe.wait_for(f"lazy/burst/{n}", WAIT)
        time.sleep(0.2)  # and on their way back over loopback
        assert acked == [] and io.watches[-1] == (0, 0)  # nothing has read them yet
        watched_before = len(io.watches)
        second = on_loop(io, lambda: [link.publish(f"lazy/burst/{n}", b"y", qos=1)
                                      for n in range(5, 10)])
        # Read by that turn (no other comes), before it decided; the next one ends it.
        assert wait_until(lambda: set(first) <= set(acked), WAIT)
        on_loop(io, lambda: None)
        # Watched again only once the second burst's acknowledgements had come too (idle),
        # never with half the window in flight.
        assert all(count == 10 for _, count in io.watches[watched_before:]), io.watches
        on_loop(io, link.read_now)  # and the second burst's are read when asked
        assert wait_until(lambda: sorted(acked) == sorted(first + second), WAIT)
    finally:
        monkeypatch.undo()  # stopping counts on the loop's usual turns
        link.stop()
        io.stop()
