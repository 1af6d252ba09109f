"""The spool's writes as the I/O loop makes them: one transaction per turn, and only for
entries still unacknowledged after ``SPOOL_AFTER`` (group commit), at once on a backlog."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry

from bridge.courier import SPOOL_AFTER, Courier, CourierOptions
from bridge.metrics import Metrics
from bridge.spool import Spool
from tests.unit.outbox.test_spool import _entry

SERIAL = "S1"
TOPIC = "MagTek/Device/X/S1/MMSMessage"


class Link:
    """What the courier uses of MqttLink: always up, acks on demand."""

    v5 = True
    max_packet_size = 0
    token = 424242
    generation = 1

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.ready.set()
        self.connected = self.ready
        self.mids: list[int] = []
        self.payloads: list[bytes] = []

    def publish_message(self, topic, payload, qos, properties) -> int:
        self.mids.append(len(self.mids) + 1)
        self.payloads.append(payload)
        return self.mids[-1]

    def count_published(self, count: int) -> None:
        pass


def _courier(tmp_path, clock) -> tuple[Courier, Spool, Link]:
    spool = Spool(tmp_path / "outbox.sqlite")
    courier = Courier(CourierOptions(window=4), spool=spool, clock=clock,
                      metrics=Metrics(CollectorRegistry(), process_metrics=False))
    link = Link()
    courier.set_fallback(link)  # type: ignore[arg-type]
    return courier, spool, link


def test_a_batch_is_one_transaction_and_rolls_forward_together(tmp_path):
    spool = Spool(tmp_path / "outbox.sqlite")
    entries = [_entry(n) for n in range(5)]
    with spool.batch():
        spool.add_many(entries[:3])
        spool.add(entries[3])
        spool.remove([entries[0]])
        assert spool._db is not None and spool._db.in_transaction
    assert spool.count() == 3
    spool.close()


def test_acknowledged_in_time_never_touches_the_spool(tmp_path):
    now = [time.monotonic()]
    courier, spool, link = _courier(tmp_path, lambda: now[0])
    for n in range(3):
        courier.enqueue(SERIAL, TOPIC, b"%d" % n, ())
    courier.pump_once()
    assert len(link.mids) == 3 and spool.count() == 0
    for mid in link.mids:
        courier.published(link, mid, None)  # type: ignore[arg-type]
    courier.pump_once()
    assert courier.queued(SERIAL) == 0
    assert spool.count() == 0  # written never: the broker had them first


def test_unacknowledged_after_the_delay_is_spooled(tmp_path, monkeypatch):
    now = [time.monotonic()]
    courier, spool, link = _courier(tmp_path, lambda: now[0])
    courier.enqueue(SERIAL, TOPIC, b"1", ())
    courier.pump_once()
    assert spool.count() == 0
    later = now[0] + SPOOL_AFTER + 0.01
    monkeypatch.setattr(time, "monotonic", lambda: later)
    courier.pump_once()
    assert spool.count() == 1
    courier.published(link, link.mids[0], None)  # type: ignore[arg-type]
    courier.pump_once()
    assert spool.count() == 0  # the row goes with the ack


def test_a_backlog_is_spooled_at_once(tmp_path):
    courier, spool, _link = _courier(tmp_path, time.monotonic)
    for n in range(10):  # the window is 4: six wait
        courier.enqueue(SERIAL, TOPIC, b"%d" % n, ())
    courier.pump_once()
    assert spool.count() == 10


def test_stop_spools_whatever_is_held(tmp_path):
    courier, spool, _link = _courier(tmp_path, time.monotonic)
    courier.enqueue(SERIAL, TOPIC, b"1", ())
    courier.pump_once()
    assert spool.count() == 0
    courier.stop()
    assert spool.count() == 1
    assert [entry.payload for entry in spool.load(ttl=60)[SERIAL]] == [b"1"]
