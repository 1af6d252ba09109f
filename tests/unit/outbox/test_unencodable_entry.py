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
