"""Fault injection against a real Mosquitto: nothing the bridge accepted is lost or reordered.

Every scenario prints its figures (sent / delivered / dropped) for the closing note; run them
alone with ``pytest -m faults -s``.
"""

from __future__ import annotations

import threading
import time

import pytest

from bridge.mms import build_notification
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import running_bridge, wait_until
from tests.integration.support.consumer import DurableConsumer

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERIAL = "B550001"
ROOT = f"MagTek/Device/DynaFlexII/{SERIAL}"
# Mosquitto drops QoS 1 messages beyond max_queued_messages (1000) per subscriber.
PERSISTENT = (
    "persistence true\npersistence_location {dir}/\nautosave_interval 0\n"
    "max_queued_messages 100000\n"
)


def numbered(n: int) -> bytes:
    return build_notification(0x1001, n.to_bytes(4, "big"))


def persistent_broker(factory, tmp_path):
    store = tmp_path / "mosq-store"
    store.mkdir()
    return factory(extra=PERSISTENT.format(dir=store))


def sample(app, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def dropped(app, reason: str) -> float:
    return sample(app, "magtek_bridge_outbox_dropped_total", reason=reason)


def report(scenario: str, **figures: object) -> None:
    print(f"\n[faults] {scenario}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def assert_in_order_once(consumer: DurableConsumer, expected: list[int]) -> None:
    got = consumer.numbers()
    assert got == expected, (
        f"{len(got)} unique of {len(expected)}; first difference at "
        f"{next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)}"
    )


def connected(app) -> bool:
    sessions = app.supervisor.sessions()
    return bool(sessions) and all(s.link is not None and s.link.ready.is_set() for s in sessions)


def test_broker_restart_during_1000_messages(broker_factory, tmp_path):
    broker = persistent_broker(broker_factory, tmp_path)
    consumer = DurableConsumer(broker.host, broker.port, f"{ROOT}/MMSMessage")
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    try:
        with running_bridge(broker, bus=bus) as (app, _):
            assert wait_until(lambda: connected(app), 10)
            reader = bus.readers[0]

            def emit() -> None:
                for n in range(1000):
                    reader.emit_message(numbered(n))
                    time.sleep(0.002)

            emitter = threading.Thread(target=emit)
            emitter.start()
            assert wait_until(lambda: len(consumer.deliveries) >= 200, 20)
            broker.restart()
            emitter.join(30)
            assert consumer.wait_for_count(1000, 60), f"only {len(consumer.unique())} arrived"
            assert_in_order_once(consumer, list(range(1000)))
            duplicates = len(consumer.deliveries) - len(consumer.unique())
            replayed = sum(d.replayed for d in consumer.unique())
            assert dropped(app, "full") + dropped(app, "expired") == 0
            report("broker restart", sent=1000, delivered=len(consumer.unique()),
                   duplicates=duplicates, replayed=replayed, dropped=0)
    finally:
        consumer.close()


def test_thirty_second_outage_delivers_everything_in_order(broker_factory, tmp_path):
    broker = persistent_broker(broker_factory, tmp_path)
    consumer = DurableConsumer(broker.host, broker.port, f"{ROOT}/MMSMessage")
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    try:
        with running_bridge(broker, bus=bus) as (app, _):
            assert wait_until(lambda: connected(app), 10)
            reader = bus.readers[0]
            for n in range(50):
                reader.emit_message(numbered(n))
            assert consumer.wait_for_count(50, 10)
            broker.stop()
            assert wait_until(lambda: not connected(app), 10)
            started = time.monotonic()
            n = 50
            while time.monotonic() - started < 30:
                reader.emit_message(numbered(n))
                n += 1
                time.sleep(0.05)
            held = app.courier.queued(SERIAL)
            broker.start()
            assert consumer.wait_for_count(n, 30), f"{len(consumer.unique())} of {n}"
            assert_in_order_once(consumer, list(range(n)))
            late = [d for d in consumer.unique() if d.number >= 50]
            assert all(d.replayed for d in late)
            assert not any(d.replayed for d in consumer.unique()[:50])
            assert wait_until(lambda: app.courier.queued(SERIAL) == 0, 5)
            assert sample(app, "magtek_bridge_outbox_replayed_total") >= n - 50
            report("30 s outage", sent=n, held_during_outage=held,
                   delivered=len(consumer.unique()), replayed=len(late), dropped=0)
    finally:
        consumer.close()


def test_outage_longer_than_ttl_drops_expired_and_counts_them(broker_factory, tmp_path):
    broker = persistent_broker(broker_factory, tmp_path)
    consumer = DurableConsumer(broker.host, broker.port, f"{ROOT}/MMSMessage")
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    try:
        with running_bridge(broker, bus=bus, outbox={"ttl": 4.0}) as (app, _):
            assert wait_until(lambda: connected(app), 10)
            reader = bus.readers[0]
            broker.stop()
            assert wait_until(lambda: not connected(app), 10)
            for n in range(20):  # these will be 6 s old when the broker returns
                reader.emit_message(numbered(n))
            time.sleep(6)
            for n in range(20, 30):
                reader.emit_message(numbered(n))
            assert wait_until(lambda: app.courier.queued(SERIAL) >= 10, 5)
            broker.start()
            assert consumer.wait_for_count(10, 15)
            assert wait_until(lambda: app.courier.queued(SERIAL) == 0, 5)
            assert_in_order_once(consumer, list(range(20, 30)))
            assert dropped(app, "expired") == 20
            report("outage 6 s > ttl 4 s", sent=30, delivered=len(consumer.unique()),
                   dropped_expired=int(dropped(app, "expired")))
    finally:
        consumer.close()


def test_oversize_message_is_dropped_and_does_not_jam_the_rest(broker_factory, tmp_path):
    broker = broker_factory(extra="max_packet_size 4096\n")
    consumer = DurableConsumer(broker.host, broker.port, f"{ROOT}/MMSMessage")
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    try:
        with running_bridge(broker, bus=bus) as (app, _):
            assert wait_until(lambda: connected(app), 10)
            reader = bus.readers[0]
            reader.emit_message(numbered(1))
            big = build_notification(0x1001, (2).to_bytes(4, "big"),
                                     payload=b"\xc1\x82" + (3000).to_bytes(2, "big") + b"\0" * 3000)
            reader.emit_message(big)  # 6 KB as hex: over the broker's 4 KB
            reader.emit_message(numbered(3))
            assert consumer.wait_for_count(2, 10)
            assert_in_order_once(consumer, [1, 3])
            assert dropped(app, "oversize") == 1
            report("oversize", sent=3, delivered=2, dropped_oversize=1)
    finally:
        consumer.close()
