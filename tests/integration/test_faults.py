"""Fault injection against a real Mosquitto: nothing the bridge accepted is lost or reordered.

Every scenario prints its figures (sent / delivered / dropped) for the closing note; run them
alone with ``pytest -m faults -s``.
"""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from bridge.mms import build_notification, commands, packetize, parse_message
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import running_bridge, wait_until
from tests.integration.support.consumer import DurableConsumer
from tests.integration.support.relay import TcpRelay

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


@pytest.fixture
def durable_broker(broker_factory, tmp_path):
    """A broker that keeps sessions and queued QoS 1 messages across its own restarts."""
    return persistent_broker(broker_factory, tmp_path)


@pytest.fixture
def consumers():
    """``make(broker)``: a durable consumer of the test reader's MMSMessage, closed after."""
    made: list[DurableConsumer] = []

    def make(broker) -> DurableConsumer:
        consumer = DurableConsumer(broker.host, broker.port, f"{ROOT}/MMSMessage")
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()


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


def test_broker_restart_during_1000_messages(durable_broker, consumers):
    broker = durable_broker
    consumer = consumers(broker)
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
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


def test_thirty_second_outage_delivers_everything_in_order(durable_broker, consumers):
    broker = durable_broker
    consumer = consumers(broker)
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
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


def test_outage_longer_than_ttl_drops_expired_and_counts_them(durable_broker, consumers):
    broker = durable_broker
    consumer = consumers(broker)
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
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


def test_oversize_message_is_dropped_and_does_not_jam_the_rest(broker_factory, consumers):
    broker = broker_factory(extra="max_packet_size 4096\n")
    consumer = consumers(broker)
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
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


def test_network_partition_noticed_within_keepalive_and_healed(durable_broker, consumers):
    broker = durable_broker
    consumer = consumers(broker)
    proxy = TcpRelay(broker.host, broker.port)
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    keepalive = 5
    try:
        with running_bridge(broker, bus=bus, mqtt={"port": proxy.port,
                                                   "keepalive": keepalive}) as (app, _):
            assert wait_until(lambda: connected(app), 10)
            reader = bus.readers[0]
            for n in range(20):
                reader.emit_message(numbered(n))
            assert consumer.wait_for_count(20, 10)
            proxy.blackhole()
            cut_at = time.monotonic()
            n = 20
            while connected(app) and time.monotonic() - cut_at < 4 * keepalive:
                reader.emit_message(numbered(n))
                n += 1
                time.sleep(0.1)
            noticed_after = time.monotonic() - cut_at
            # The configured keepalive bounds detection (plus a poll interval of slack).
            assert noticed_after <= keepalive + 1, noticed_after
            for _ in range(20):
                reader.emit_message(numbered(n))
                n += 1
            proxy.heal()
            assert consumer.wait_for_count(n, 30), f"{len(consumer.unique())} of {n}"
            assert_in_order_once(consumer, list(range(n)))
            report("network partition", sent=n, delivered=len(consumer.unique()),
                   noticed_after_s=round(noticed_after, 1), keepalive_s=keepalive,
                   duplicates=len(consumer.deliveries) - len(consumer.unique()))
    finally:
        proxy.close()


def test_unplug_in_the_middle_of_a_multi_packet_message(broker, probe_factory):
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    with running_bridge(broker, bus=bus) as (app, _):
        probe = probe_factory(f"{ROOT}/MMSMessage", f"{ROOT}/Status")
        probe.expect_retained(f"{ROOT}/Status", b"connected", timeout=10)
        reader = bus.readers[0]
        long_message = build_notification(0x1001, (1).to_bytes(4, "big"),
                                          payload=b"\xc1\x81\xc8" + b"\x5a" * 200)
        reports = packetize(long_message, 64)
        assert len(reports) >= 3
        before = sample(app, "magtek_bridge_hid_reports_total", direction="in")
        for report_bytes in reports[:2]:  # head and one middle, never the tail
            reader.emit_raw_report(report_bytes)
        assert wait_until(lambda: sample(app, "magtek_bridge_hid_reports_total",
                                         direction="in") >= before + 2, 5)
        bus.unplug(0)
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"disconnected",
                       timeout=5)
        assert wait_until(lambda: sample(app, "magtek_bridge_framing_errors_total",
                                         reason="abandoned") == 1, 5)
        bus.replug(0)
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"connected",
                       timeout=10)
        reader.emit_message(long_message)
        got = probe.wait_for(f"{ROOT}/MMSMessage", timeout=5)
        assert bytes.fromhex(got.payload.decode()) == long_message
        report("unplug mid-message", partial_dropped=1, next_message_intact=True)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _rejected(app) -> float:
    return sum(
        s.value for m in app.metrics.registry.collect() if m.name == "magtek_bridge_commands"
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("outcome") == "rejected")


def test_flood_of_malformed_reports_and_garbage_commands(broker, probe_factory):
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    rng = random.Random(5)
    with running_bridge(broker, bus=bus) as (app, _):
        probe = probe_factory(f"{ROOT}/Status", f"{ROOT}/Error")
        probe.expect_retained(f"{ROOT}/Status", b"connected", timeout=10)
        reader = bus.readers[0]
        rss_before = _rss_mb()
        reports_before = sample(app, "magtek_bridge_hid_reports_total", direction="in")
        for _ in range(10):
            for _ in range(10_000):
                reader.emit_raw_report(rng.randbytes(64))
            assert wait_until(lambda: not reader._out, 30)
        assert wait_until(lambda: sample(app, "magtek_bridge_hid_reports_total", direction="in")
                          >= reports_before + 100_000, 30)
        framing = sum(
            s.value for m in app.metrics.registry.collect()
            if m.name == "magtek_bridge_framing_errors" for s in m.samples
            if s.name.endswith("_total"))
        assert framing > 0

        garbage: list[bytes] = []
        for i in range(10_000):
            kind = i % 4
            if kind == 0:
                garbage.append(b"not hex at all %d" % i)
            elif kind == 1:
                garbage.append(b"AA00" + b"ZZ" * 8)
            elif kind == 2:
                garbage.append(rng.randbytes(rng.randrange(1, 300)))
            else:
                garbage.append(b"%04X" % i)  # hex, but no MMS message
        rejected_before = _rejected(app)
        for payload in garbage:
            probe.client.publish(f"{ROOT}/SendCommand", payload, qos=0)
        for i in range(100):  # wrong topics: never ours, never a crash
            probe.client.publish(f"{ROOT}/SendCommand/extra{i}", b"AA", qos=0)
            probe.client.publish(f"{ROOT}/sendcommand", b"AA", qos=0)
        # Over the command size cap (readers.max_message_size as hex, 2 MiB), under the largest
        # packet the bridge takes (4 MiB; larger ones the broker drops for it): refused here.
        huge = b"A" * (3 << 20)
        probe.publish(f"{ROOT}/SendCommand", huge)

        def rejected() -> float:
            return _rejected(app) - rejected_before

        assert wait_until(lambda: rejected() >= 10_001, 60), rejected()
        rss_growth = _rss_mb() - rss_before
        assert rss_growth < 100, rss_growth
        # Still serving: a real command round trip after the flood, once the reader's command
        # budget (readers.command_rate) has refilled: during the flood it is refused as
        # rate_limited, by design.
        time.sleep(1.0)
        response_probe = probe_factory(f"{ROOT}/MMSMessage")
        response_probe.publish(f"{ROOT}/SendCommand",
                               commands.get_serial_number(0x42).hex().encode())
        response_probe.wait_for(
            lambda m: parse_message(bytes.fromhex(m.payload.decode())).command_id == 0xD101,
            timeout=10)
        report("floods", malformed_reports=100_000, framing_errors=int(framing),
               garbage_commands=10_001, rejected=int(rejected()),
               rss_growth_mb=round(rss_growth, 1))


def test_spool_disk_full_and_corrupt_fall_back_to_memory(durable_broker, consumers, tmp_path):
    broker = durable_broker
    consumer = consumers(broker)
    spool = tmp_path / "full.sqlite"
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    with running_bridge(broker, bus=bus, outbox={"spool_path": str(spool),
                                                 "spool_max_bytes": 65536}) as (app, _):
        assert wait_until(lambda: connected(app), 10)
        broker.stop()
        assert wait_until(lambda: not connected(app), 10)
        for n in range(60):  # ~2 KB each as hex: the 64 KB spool fills up
            reader_message = build_notification(0x1001, n.to_bytes(4, "big"),
                                                payload=b"\xc1\x82\x04\x00" + b"\1" * 1024)
            bus.readers[0].emit_message(reader_message)
        assert wait_until(lambda: app.courier.queued(SERIAL) == 60, 10)
        assert sample(app, "magtek_bridge_spool_failures_total", operation="write") == 1
        assert sample(app, "magtek_bridge_spool_enabled") == 0
        _, details = app.readiness()
        assert str(details["spool"]).startswith("off: write:")
        broker.start()
        assert consumer.wait_for_count(60, 20)
        assert_in_order_once(consumer, list(range(60)))
        report("spool disk full", sent=60, delivered=60, spool_failures=1)

    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"\x00garbage, not SQLite\x00" * 512)
    probe_consumer = consumers(broker)
    with running_bridge(broker, bus=SimulatedBus(count=1, serials=[SERIAL],
                                                 auto_present=None),
                        outbox={"spool_path": str(corrupt)}) as (app, bus2):
        assert sample(app, "magtek_bridge_spool_failures_total", operation="open") == 1
        assert wait_until(lambda: connected(app), 10)
        for n in range(5):
            bus2.readers[0].emit_message(numbered(n))
        assert probe_consumer.wait_for_count(5, 10)
        assert probe_consumer.numbers() == list(range(5))
        _, details = app.readiness()
        assert str(details["spool"]).startswith("off: open:")
        report("corrupt spool", sent=5, delivered=5, spool_failures=1)


def test_command_for_an_unplugged_reader_is_refused_not_stored(broker, probe_factory):
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    with running_bridge(broker, bus=bus) as (_app, _):
        probe = probe_factory(f"{ROOT}/Status", f"{ROOT}/Error", f"{ROOT}/MMSMessage")
        probe.expect_retained(f"{ROOT}/Status", b"connected", timeout=10)
        bus.unplug(0)
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"disconnected",
                       timeout=5)
        probe.publish(f"{ROOT}/SendCommand", commands.get_serial_number(0x43).hex().encode())
        error = json.loads(probe.wait_for(f"{ROOT}/Error", timeout=5).payload)
        assert error["reason"] == "reader_absent"
        bus.replug(0)
        probe.wait_for(lambda m: m.topic == f"{ROOT}/Status" and m.payload == b"connected",
                       timeout=10)
        time.sleep(0.5)
        # Nothing was kept for later: the reader never answers the refused command.
        leftovers = [m for m in probe.drain() if m.topic == f"{ROOT}/MMSMessage"
                     and parse_message(bytes.fromhex(m.payload.decode())).ref == 0x43]
        assert leftovers == []


def test_messages_in_flight_through_a_long_partition_still_expire(durable_broker, consumers):
    # Sent into a black hole, they sit inside paho unacknowledged; paho would re-send them
    # as they were after the reconnect. The bridge takes them back and applies the TTL.
    broker = durable_broker
    consumer = consumers(broker)
    proxy = TcpRelay(broker.host, broker.port)
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    try:
        with running_bridge(broker, bus=bus, mqtt={"port": proxy.port, "keepalive": 5},
                            outbox={"ttl": 3.0}) as (app, _):
            assert wait_until(lambda: connected(app), 10)
            reader = bus.readers[0]
            reader.emit_message(numbered(0))
            assert consumer.wait_for_count(1, 10)
            assert wait_until(lambda: app.courier.queued(SERIAL) == 0, 5)  # its PUBACK is in
            proxy.blackhole()
            for n in range(1, 6):
                reader.emit_message(numbered(n))
            assert wait_until(lambda: not connected(app), 10)
            time.sleep(3.5)  # older than the TTL by now
            proxy.heal()
            assert wait_until(lambda: connected(app), 15)
            for n in range(6, 9):
                reader.emit_message(numbered(n))
            assert consumer.wait_for_count(4, 10)
            assert wait_until(lambda: app.courier.queued(SERIAL) == 0, 5)
            assert_in_order_once(consumer, [0, 6, 7, 8])
            assert dropped(app, "expired") == 5
            report("in flight through a partition > ttl", sent=9, delivered=4,
                   dropped_expired=5)
    finally:
        proxy.close()
