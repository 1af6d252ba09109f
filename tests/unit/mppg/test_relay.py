"""The WebSocket status relay against the fake service, publishing into a recorder."""

from __future__ import annotations

import json
import threading
import time

import pytest
from structlog.testing import capture_logs

from bridge.mppg.definition import parse_definition
from bridge.mppg.models import PaymentRequestDetail
from bridge.mppg.relay import RelayOptions, StatusRelay, parse_summary
from bridge.mppg.relays import RelayManager
from bridge.mppg.topics import PaymentTopics
from tests.fakes.mppg_fake import CARD_SENTINEL

TOPICS = PaymentTopics("MagTek/Bridge/testhost")
FAST = RelayOptions(connect_timeout=2.0, reconnect_min_delay=0.05, reconnect_max_delay=0.2,
                    poll_interval=0.05)


class Recorder:
    """A thread-safe ``publish(topic, payload, retain)`` that tests can wait on."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()

    def __call__(self, topic: str, payload: bytes, retain: bool) -> None:
        with self._cond:
            self.messages.append((topic, payload, retain))
            self._cond.notify_all()

    def on(self, topic: str) -> list[dict]:
        with self._cond:
            return [json.loads(p) for t, p, _ in self.messages if t == topic]

    def wait(self, predicate, timeout: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, timeout), self.messages


def _relay(client, detail, recorder, **kwargs) -> StatusRelay:
    relay = StatusRelay(detail, client=client, topics=TOPICS, publish=recorder,
                        options=kwargs.pop("options", FAST), **kwargs)
    relay.start()
    return relay


def test_summaries_in_order_then_paid(mppg_client, fake_mppg):
    detail = mppg_client.create(parse_definition({"amount": "2.00", "usageCountLimit": 2}))
    rid = detail.payment_request_id
    recorder = Recorder()
    relay = _relay(mppg_client, detail, recorder)
    try:
        assert fake_mppg.wait_listeners(rid, 1)
        sent = [fake_mppg.pay(rid, approved=False), fake_mppg.pay(rid), fake_mppg.pay(rid)]
        assert relay.join(5.0), "relay did not end after Paid"
    finally:
        relay.stop()
    assert recorder.on(TOPICS.transaction(rid)) == sent
    statuses = recorder.on(TOPICS.state(rid))
    assert statuses[0]["statusName"] == "Active" and statuses[0]["currentUsageCount"] == 0
    assert statuses[-1] == {"paymentRequestID": rid, "status": 4, "statusName": "Paid",
                            "currentUsageCount": 2, "usageCountLimit": 2}
    assert all(retain for t, _, retain in recorder.messages if t.endswith("/State"))
    assert not any(retain for t, _, retain in recorder.messages if t.endswith("/Transaction"))
    assert relay.ended == "paid"
    assert fake_mppg.wait_no_listeners(rid)


def test_reconnects_with_a_fresh_token_after_a_drop(mppg_client, fake_mppg):
    detail = mppg_client.create(parse_definition({"amount": 1, "usageCountLimit": 1}))
    rid = detail.payment_request_id
    recorder = Recorder()
    relay = _relay(mppg_client, detail, recorder)
    try:
        assert fake_mppg.wait_listeners(rid, 1)
        fake_mppg.drop_sockets(rid)
        assert fake_mppg.wait_connects(rid, 2)
        assert fake_mppg.wait_listeners(rid, 1)
        fake_mppg.pay(rid)
        assert relay.join(5.0)
    finally:
        relay.stop()
    assert len(recorder.on(TOPICS.transaction(rid))) == 1
    assert recorder.on(TOPICS.state(rid))[-1]["statusName"] == "Paid"


def test_no_token_on_create_fetches_one(mppg_client, fake_mppg):
    fake_mppg.links_on_create = False  # as in the spec's own create example
    detail = mppg_client.create(parse_definition({"amount": 1, "usageCountLimit": 1}))
    assert detail.websocket_token is None
    recorder = Recorder()
    relay = _relay(mppg_client, detail, recorder)
    try:
        assert fake_mppg.wait_listeners(detail.payment_request_id, 1)
    finally:
        relay.stop()
        assert relay.join(3.0)
    assert relay.ended == "bridge stopping"


def test_survives_the_service_going_away_and_coming_back(mppg_client, fake_mppg):
    detail = mppg_client.create(parse_definition({"amount": 1, "usageCountLimit": 1}))
    rid = detail.payment_request_id
    recorder = Recorder()
    relay = _relay(mppg_client, detail, recorder)
    try:
        assert fake_mppg.wait_listeners(rid, 1)
        fake_mppg.stop()
        time.sleep(0.5)  # several failed rounds of GET + connect
        assert relay.alive
        fake_mppg.start()  # same ports, same data
        assert fake_mppg.wait_listeners(rid, 1)
        fake_mppg.pay(rid)
        assert relay.join(5.0)
    finally:
        relay.stop()
    assert recorder.on(TOPICS.state(rid))[-1]["statusName"] == "Paid"


def test_card_data_and_tokens_are_never_logged(mppg_client, fake_mppg):
    detail = mppg_client.create(parse_definition({"amount": 1, "usageCountLimit": 1}))
    rid = detail.payment_request_id
    recorder = Recorder()
    with capture_logs() as logs:
        relay = _relay(mppg_client, detail, recorder)
        try:
            assert fake_mppg.wait_listeners(rid, 1)
            fake_mppg.drop_sockets(rid)  # a reconnect logs too
            assert fake_mppg.wait_connects(rid, 2)
            assert fake_mppg.wait_listeners(rid, 1)
            fake_mppg.pay(rid)
            assert relay.join(5.0)
        finally:
            relay.stop()
    assert CARD_SENTINEL in recorder.messages[-2][1].decode()  # relayed to MQTT ...
    text = repr(logs)
    assert "mppg_relay_transaction" in text
    assert CARD_SENTINEL not in text and "SENTINEL" not in text  # ... but never logged
    assert "access_token" not in text and str(detail.websocket_token) not in text


def test_manager_bounds_and_deduplicates(mppg_client, fake_mppg):
    recorder = Recorder()
    manager = RelayManager(client=mppg_client, topics=TOPICS, publish=recorder, options=FAST,
                           max_relays=2)
    details = [mppg_client.create(parse_definition({"amount": 1})) for _ in range(3)]
    try:
        assert manager.start(details[0]) == "started"
        assert manager.start(details[0]) == "running"
        assert manager.start(details[1]) == "started"
        assert manager.start(details[2]) == "limit"
        assert manager.active() == sorted(d.payment_request_id for d in details[:2])
        disabled = mppg_client.update(details[2].payment_request_id,
                                      parse_definition({"amount": 1, "isEnabled": False}))
        assert manager.start(disabled) == "final"  # nothing to listen for: status only
        assert recorder.on(TOPICS.state(disabled.payment_request_id))[-1]["status"] == 0
    finally:
        manager.stop_all()
    assert manager.active() == []
    assert manager.start(details[2]) == "disabled"  # stopped managers start nothing


def test_zero_relays_means_none():
    manager = RelayManager(client=None, topics=TOPICS, publish=Recorder(),  # type: ignore[arg-type]
                           options=FAST, max_relays=0)
    assert manager.start(PaymentRequestDetail.model_validate(
        {"paymentRequestID": "a-1", "status": 2})) == "disabled"


@pytest.mark.parametrize(("raw", "ok"), [
    ('{"transactionResponse": "x", "detail": {"approved": true}}', True),
    (json.dumps(json.dumps({"transactionResponse": "x", "detail": None})), True),
    ("not json", False),
    ("[1, 2]", False),
    ('{"detail": {"approved": "perhaps"}}', False),
])
def test_parse_summary(raw, ok):
    assert (parse_summary(raw) is not None) is ok
