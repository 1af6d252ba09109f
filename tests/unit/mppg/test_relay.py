"""The WebSocket status relay against the fake service, publishing into a recorder."""

from __future__ import annotations

import json
import threading
import time

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from bridge.mppg.definition import parse_definition
from bridge.mppg.journal import RelayJournal
from bridge.mppg.metrics import MppgMetrics
from bridge.mppg.models import PaymentRequestDetail
from bridge.mppg.relay import RelayOptions, StatusRelay, parse_summary, secure_socket_url
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


def test_a_payment_made_while_the_socket_is_down_is_filled_in_once(mppg_client, fake_mppg):
    detail = mppg_client.create(parse_definition({"amount": "3.00", "usageCountLimit": 2}))
    rid = detail.payment_request_id
    recorder = Recorder()
    relay = _relay(mppg_client, detail, recorder)
    try:
        assert fake_mppg.wait_listeners(rid, 1)
        live = fake_mppg.pay(rid)
        recorder.wait(lambda: len(recorder.on(TOPICS.transaction(rid))) == 1)
        fake_mppg.ws_refuse = True  # the push service is unreachable for a while
        fake_mppg.drop_sockets(rid)
        missed = fake_mppg.pay(rid)  # Paid, and no socket to say so
        fake_mppg.ws_refuse = False
        assert relay.join(5.0)
    finally:
        relay.stop()
    relayed = recorder.on(TOPICS.transaction(rid))
    assert relayed[0] == live
    assert [r["detail"]["transactionId"] for r in relayed] == [
        live["detail"]["transactionId"], missed["detail"]["transactionId"]]
    assert relayed[1]["recovered"] is True and relayed[1]["transactionResponse"] is None
    assert relayed[1]["detail"]["approved"] is True
    assert recorder.on(TOPICS.state(rid))[-1]["statusName"] == "Paid"


def test_journal_resume_publishes_missed_transactions_once(mppg_client, fake_mppg, tmp_path):
    journal = RelayJournal(tmp_path / "mppg-relays.json")
    detail = mppg_client.create(parse_definition({"amount": 1, "usageCountLimit": 3}))
    rid = detail.payment_request_id
    first = Recorder()
    manager = RelayManager(client=mppg_client, topics=TOPICS, publish=first, options=FAST,
                           max_relays=4, journal=journal)
    assert manager.start(detail) == "started"
    assert fake_mppg.wait_listeners(rid, 1)
    seen = fake_mppg.pay(rid)
    first.wait(lambda: len(first.on(TOPICS.transaction(rid))) == 1)
    manager.stop_all()  # the bridge stops: the relay stays in the journal
    assert RelayJournal(tmp_path / "mppg-relays.json").requests() == [rid]
    missed = [fake_mppg.pay(rid), fake_mppg.pay(rid)]  # paid in full while it was down

    second = Recorder()  # a new process: a new journal object reads the file
    registry = CollectorRegistry()
    metrics = MppgMetrics(registry)
    restarted = RelayManager(client=mppg_client, topics=TOPICS, publish=second, options=FAST,
                             max_relays=4, journal=RelayJournal(tmp_path / "mppg-relays.json"),
                             metrics=metrics)
    assert restarted.resume() == [rid]
    second.wait(lambda: any(s["statusName"] == "Paid" for s in second.on(TOPICS.state(rid))))
    ids = [t["detail"]["transactionId"] for t in second.on(TOPICS.transaction(rid))]
    assert ids == [m["detail"]["transactionId"] for m in missed]  # not `seen` again
    assert seen["detail"]["transactionId"] not in ids
    assert registry.get_sample_value("magtek_bridge_payment_transactions_recovered_total") == 2
    assert wait_for(lambda: restarted.active() == [], 5)
    assert RelayJournal(tmp_path / "mppg-relays.json").requests() == []  # done: forgotten


def test_resume_of_a_request_mppg_does_not_know_ends(mppg_client, tmp_path):
    journal = RelayJournal(tmp_path / "j.json")
    journal.add("00000000-0000-0000-0000-000000000000")
    manager = RelayManager(client=mppg_client, topics=TOPICS, publish=Recorder(),
                           options=FAST, max_relays=4, journal=journal)
    manager.resume()
    assert wait_for(lambda: manager.active() == [], 5)
    assert journal.requests() == []


@pytest.mark.parametrize(("url", "ok"), [
    ("wss://magensapayment.webpubsub.azure.com/client/hubs/X?access_token=t", True),
    ("ws://magensapayment.webpubsub.azure.com/client/hubs/X?access_token=t", False),
    ("ws://127.0.0.1:9/x", True), ("ws://[::1]:9/x", True), ("ws://localhost/x", True),
    ("https://example.com/x", False), ("wss:///nohost", False),
])
def test_websocket_urls_must_be_wss_beyond_loopback(url, ok):
    assert secure_socket_url(url) is ok


def test_manager_refuses_a_plain_ws_url_beyond_loopback():
    manager = RelayManager(client=None, topics=TOPICS, publish=Recorder(),  # type: ignore[arg-type]
                           options=FAST, max_relays=4)
    detail = PaymentRequestDetail.model_validate(
        {"paymentRequestID": "a-1", "status": 2,
         "websocketToken": "ws://push.example.com/hub?access_token=secret"})
    assert manager.start(detail) == "refused"
    assert manager.active() == []


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
