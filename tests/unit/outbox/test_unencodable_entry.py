"""A spooled entry whose user properties cannot be encoded (a corrupt row: a lone surrogate
the JSON decoder accepts) is dropped as refused, like any publish that fails; it must not be
left in flight with nobody owning it, nor stop the turn for the entries behind it."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from bridge.courier import Courier, CourierOptions
from bridge.metrics import Metrics
from bridge.outbox import Entry
from bridge.spool import Spool
from tests.unit.outbox.test_group_commit import SERIAL, TOPIC, Link


@pytest.mark.parametrize("max_packet_size", [0, 100_000])  # sized first when there is a limit
def test_an_entry_whose_properties_do_not_encode_is_refused_and_the_rest_goes(
        tmp_path, max_packet_size):
    spool = Spool(tmp_path / "outbox.sqlite")
    now = time.monotonic()
    spool.add(Entry(serial=SERIAL, topic=TOPIC, payload=b"AA",
                    user_properties=(("k", "\ud800"),), created=now))
    spool.add(Entry(serial=SERIAL, topic=TOPIC, payload=b"BB",
                    user_properties=(("seq", "2"),), created=now))
    spool.close()
    spool = Spool(tmp_path / "outbox.sqlite")
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    courier = Courier(CourierOptions(max_packet_size=max_packet_size), spool=spool,
                      metrics=metrics)
    courier.start()
    link = Link()
    courier.set_fallback(link)  # type: ignore[arg-type]

    courier.pump_once()  # must not raise

    assert link.payloads == [b"BB"]
    refused = metrics.registry.get_sample_value(
        "magtek_bridge_outbox_dropped_total", {"reason": "refused"})
    assert refused == 1
    courier.published(link, link.mids[0], None)  # type: ignore[arg-type]
    courier.pump_once()
    assert courier.queued(SERIAL) == 0
    assert spool.load(300.0) == {}


def test_a_restored_row_older_than_the_one_before_it_expires_instead_of_going_out(tmp_path):
    # Rows come back in the order they were spooled; a wall clock stepped back between two
    # writes makes a later row older. Each entry's own time-to-live decides, not the first's.
    spool = Spool(tmp_path / "outbox.sqlite")
    now = time.monotonic()
    spool.add(Entry(serial=SERIAL, topic=TOPIC, payload=b"FRESH",
                    user_properties=(("seq", "1"),), created=now))
    spool.add(Entry(serial=SERIAL, topic=TOPIC, payload=b"OLD",
                    user_properties=(("seq", "2"),), created=now - 200))
    spool.add(Entry(serial=SERIAL, topic=TOPIC, payload=b"NEXT",
                    user_properties=(("seq", "3"),), created=now))
    spool.close()
    spool = Spool(tmp_path / "outbox.sqlite")
    offset = [0.0]
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    courier = Courier(CourierOptions(), spool=spool, metrics=metrics,
                      clock=lambda: time.monotonic() + offset[0])
    courier.start()  # all three alive (TTL 300 s)
    offset[0] = 150.0  # OLD is now 350 s old, the others 150 s
    link = Link()
    courier.set_fallback(link)  # type: ignore[arg-type]

    courier.pump_once()

    assert link.payloads == [b"FRESH", b"NEXT"]
    expired = metrics.registry.get_sample_value(
        "magtek_bridge_outbox_dropped_total", {"reason": "expired"})
    assert expired == 1
