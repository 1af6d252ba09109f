"""Model-based test of the courier: plug/unplug, broker up/down, acks and reader output
interleaved by hypothesis. Every accepted message is delivered exactly once in order (after
removing flagged QoS 1 duplicates) or counted as dropped.

It runs against the real I/O loop: reader output is handed over from this thread (as from a
read thread), detach waits here as a session does, and everything a link does (connect, drop,
acks) happens on the loop's thread, where paho's callbacks run."""

from __future__ import annotations

import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from bridge.courier import Courier, CourierOptions
from bridge.metrics import Metrics
from bridge.mqtt.loop import IoLoop
from bridge.outbox import OutboxLimits

pytestmark = pytest.mark.faults

SERIAL = "S1"
TOPIC = "MagTek/Device/X/S1/MMSMessage"


class FakeBroker:
    def __init__(self) -> None:
        self.up = True
        self.received: list[tuple[int, bool]] = []  # (message number, dup)


class FakeLink:
    """What the courier uses of MqttLink, with paho's in-flight and re-send behaviour."""

    v5 = True
    max_packet_size = 0
    _tokens = iter(range(1, 1_000_000))

    def __init__(self, broker: FakeBroker, courier: Courier) -> None:
        self.broker = broker
        self.courier = courier
        self.ready = threading.Event()
        self.connected = threading.Event()
        self.generation = 0
        self.token = next(FakeLink._tokens)
        self._mid = 0
        self.in_flight: dict[int, int] = {}  # mid -> number, in send order
        self.unsent: dict[int, int] = {}  # published while disconnected (paho queues them)
        self.alive = True

    def connect(self) -> None:
        if not self.broker.up or not self.alive or self.ready.is_set():
            return
        self.generation += 1
        self.connected.set()
        # MqttLink takes its tracked in-flight messages back from paho before paho re-sends
        # them; the courier re-sends them itself (fresh expiry, replayed=true).
        if self.in_flight or self.unsent:
            self.in_flight.clear()
            self.unsent.clear()
            self.courier.taken_back(self)  # type: ignore[arg-type]
        self.ready.set()

    def drop(self) -> None:
        self.ready.clear()
        self.connected.clear()

    def publish_message(self, topic: str, payload: bytes, qos: int,
                        properties: bytes | None) -> int:
        self._mid += 1
        number = int(payload)
        if self.connected.is_set():
            self.broker.received.append((number, False))
            self.in_flight[self._mid] = number
        else:
            self.unsent[self._mid] = number
        return self._mid

    def count_published(self, count: int) -> None:
        pass

    def ack_all(self) -> None:
        if not self.connected.is_set():
            return
        for mid in list(self.in_flight):
            del self.in_flight[mid]
            self.courier.published(self, mid, None)  # type: ignore[arg-type]


class CourierMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.metrics = Metrics(CollectorRegistry(), process_metrics=False)
        limits = OutboxLimits(max_messages=40, ttl=10_000)
        self.loop = IoLoop(name="model-io")
        self.loop.start()
        self.courier = Courier(CourierOptions(limits=limits, window=4, drain_timeout=0),
                               metrics=self.metrics, loop=self.loop)
        self.courier.start()
        self.dropped_numbers: set[int] = set()
        record = self.courier._dropped

        def dropped(entry, reason) -> None:
            self.dropped_numbers.add(int(entry.payload))
            record(entry, reason)

        self.courier._dropped = dropped  # type: ignore[method-assign]
        self.broker = FakeBroker()
        self.fallback = FakeLink(self.broker, self.courier)
        self.courier.set_fallback(self.fallback)  # type: ignore[arg-type]
        self.reader: FakeLink | None = None
        self.accepted = 0
        self.on_loop(self.fallback.connect)

    def on_loop(self, call) -> None:
        """Run ``call`` on the loop's thread and wait for it (then one more pump turn)."""
        done = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                call()
                self.courier.pump_once()
            except BaseException as exc:  # re-raised on the test's thread
                failure.append(exc)
            finally:
                done.set()

        self.loop.call_soon(run)
        assert done.wait(30)
        if failure:
            raise failure[0]

    def _links(self) -> list[FakeLink]:
        return [link for link in (self.fallback, self.reader) if link is not None]

    @rule(count=st.integers(1, 12))
    def reader_output(self, count: int) -> None:
        for _ in range(count):
            self.courier.enqueue(SERIAL, TOPIC, b"%d" % self.accepted, ())
            self.accepted += 1
        self.on_loop(lambda: None)

    @precondition(lambda self: self.reader is None)
    @rule()
    def plug(self) -> None:
        reader = self.reader = FakeLink(self.broker, self.courier)
        self.courier.attach(SERIAL, reader)  # type: ignore[arg-type]
        self.on_loop(reader.connect)

    @precondition(lambda self: self.reader is not None)
    @rule()
    def unplug(self) -> None:
        assert self.reader is not None
        reader = self.reader
        self.courier.detach(SERIAL, reader)  # type: ignore[arg-type]
        reader.alive = False
        self.on_loop(reader.drop)  # the session stops its client: paho's copies are gone
        self.reader = None

    @rule()
    def broker_down(self) -> None:
        self.broker.up = False
        for link in self._links():
            self.on_loop(link.drop)

    @rule()
    def broker_up(self) -> None:
        self.broker.up = True
        for link in self._links():
            self.on_loop(link.connect)

    @rule()
    def acks(self) -> None:
        for link in self._links():
            self.on_loop(link.ack_all)

    def _dropped(self) -> int:
        value = self.metrics.registry.get_sample_value(
            "magtek_bridge_outbox_dropped_total", {"reason": "full"})
        return int(value or 0)

    @invariant()
    def bounded(self) -> None:
        assert self.courier.queued(SERIAL) <= 40

    def teardown(self) -> None:
        # Heal everything, then everything accepted is delivered or was counted as dropped.
        self.broker.up = True
        for _ in range(200):
            for link in self._links():
                self.on_loop(link.connect)
                self.on_loop(link.ack_all)
            if self.courier.queued(SERIAL) == 0:
                break
        assert self.courier.queued(SERIAL) == 0
        firsts: list[int] = []
        seen: set[int] = set()
        for number, _dup in self.broker.received:
            if number in seen:
                continue  # a duplicate: same message, re-sent (seq/boot_id flag it)
            seen.add(number)
            firsts.append(number)
        assert firsts == sorted(firsts), "reordered"
        # Each accepted message arrived or was counted as dropped. (One handed back from an
        # unplugged reader's session may have reached the broker and still be dropped
        # later: counted, never silent.)
        assert set(firsts) | self.dropped_numbers == set(range(self.accepted))
        assert len(self.dropped_numbers) == self._dropped()
        self.courier.stop()
        self.loop.stop()


CourierMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                            deadline=None)
test_courier_model = CourierMachine.TestCase
