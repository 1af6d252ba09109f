"""The MQTT request/response service without a broker: messages in, replies recorded."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from bridge.config import MppgSettings
from bridge.mppg.service import PaymentRequestService
from bridge.mqtt.link import InboundMessage
from tests.integration.harness import wait_until

ROOT = "MagTek/Bridge/testhost"
BASE = f"{ROOT}/PaymentRequest"


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool, bytes | None]] = []
        self._cond = threading.Condition()

    def publish(self, topic, payload, *, qos=1, retain=False, correlation_data=None,
                kind="message"):
        with self._cond:
            self.sent.append((topic, payload, retain, correlation_data))
            self._cond.notify_all()

    def replies(self, op: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
        topic = f"{BASE}/{op}/response"
        with self._cond:
            assert self._cond.wait_for(
                lambda: sum(t == topic for t, *_ in self.sent) >= count, timeout), self.sent
            return [json.loads(p) for t, p, *_ in self.sent if t == topic]


def _message(op: str, body, *, retain=False, response_topic=None, correlation=None,
             duplicate=False, ack=None):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return InboundMessage(topic=f"{BASE}/{op}", payload=payload, retain=retain, qos=1,
                          received_at=time.monotonic(), response_topic=response_topic,
                          correlation_data=correlation, duplicate=duplicate, ack=ack)


@pytest.fixture
def make_service(fake_mppg):
    made = []

    def make(**overrides):
        values = {"enabled": True, "base_url": fake_mppg.base_url,
                  "username": fake_mppg.username, "password": fake_mppg.password,
                  "relay_reconnect_min_delay": 0.05, "relay_reconnect_max_delay": 0.2,
                  "queue_size": 4, "processor_name": "BRIDGE DEFAULT", **overrides}
        registry = CollectorRegistry()
        svc = PaymentRequestService(MppgSettings(**values), ROOT, registry=registry,
                                    environ={})
        svc.registry = registry  # type: ignore[attr-defined]
        recorder = Recorder()
        svc.attach(recorder)
        svc.recorder = recorder  # type: ignore[attr-defined]
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.stop()


@pytest.fixture
def service(make_service):
    return make_service()


def test_subscribes_the_four_operations(service):
    assert service.subscriptions() == [(f"{BASE}/{op}", 1)
                                       for op in ("create", "list", "get", "update")]


def test_create_reply_and_processor_default(service, fake_mppg):
    service.start()
    service.on_message(_message("create", {"correlation_id": "c-1", "amount": 12.5,
                                           "usageCountLimit": 1, "relay": False}))
    (reply,) = service.recorder.replies("create")
    assert reply["correlation_id"] == "c-1" and reply["ok"] is True
    assert reply["relay"] == "not requested"
    assert reply["result"]["definition"]["processorName"] == "BRIDGE DEFAULT"
    # The fake's create answers null links, as the spec's example: the reply has them anyway.
    assert reply["result"]["paymentLink"] and reply["result"]["websocketToken"]
    assert service.registry.get_sample_value(
        "magtek_bridge_payment_requests_total", {"op": "create", "outcome": "ok"}) == 1


def test_duplicate_create_is_answered_from_the_first(service, fake_mppg):
    service.start()
    body = {"correlation_id": "dup", "amount": 1, "relay": False}
    service.on_message(_message("create", body))
    service.on_message(_message("create", body))  # a QoS 1 redelivery
    first, second = service.recorder.replies("create", 2)
    assert first == second
    assert len(fake_mppg.requests) == 1


@pytest.mark.parametrize(("op", "payload", "code"), [
    ("create", b"{nope", 40010),
    ("create", b"[1]", 40010),
    ("create", b"", 40010),
    ("create", b"\xff\xfe", 40010),
    ("create", {"amount": 1.001}, 40023),
    ("create", b"[" * 100_000 + b"]" * 100_000, 41300),
    ("create", b"[" * 20_000 + b"]" * 20_000, 40010),
    ("list", b'{"ds": ' + b"[" * 40 + b"]" * 40 + b"}", 40010),
    ("create", {"amount": 1, "client_id": ""}, 40010),
    ("get", {}, 40018),
    ("get", {"paymentRequestID": "x/y"}, 40018),
    ("get", {"paymentRequestID": "abc", "amount": 1}, 40010),
    ("update", {"amount": 1}, 40018),
    ("list", {"ps": 5000}, 40014),
])
def test_bad_requests_get_documented_codes(service, op, payload, code):
    service.start()
    service.on_message(_message(op, payload))
    (reply,) = service.recorder.replies(op)
    assert reply["ok"] is False and reply["error"]["code"] == code
    assert reply["error"]["source"] == "bridge"  # all refused before MPPG saw them
    assert reply["correlation_id"] is None or isinstance(reply["correlation_id"], str)


def test_empty_list_request_means_defaults(service, fake_mppg):
    fake_mppg.seed()
    service.start()
    service.on_message(_message("list", b""))
    (reply,) = service.recorder.replies("list")
    assert reply["result"]["totalRecordsAvailable"] == 1


def test_retained_requests_are_refused_unrun(service, fake_mppg):
    service.start()
    service.on_message(_message("create", {"correlation_id": 7, "amount": 1}, retain=True))
    (reply,) = service.recorder.replies("create")
    assert reply["correlation_id"] == 7
    assert reply["error"]["code"] == 40900 and reply["error"]["source"] == "bridge"
    assert service.registry.get_sample_value(
        "magtek_bridge_payment_requests_total",
        {"op": "create", "outcome": "bridge_error"}) == 1
    assert fake_mppg.requests == {}


def test_full_queue_answers_busy(service):
    # Not started: nothing drains the queue of 4.
    for n in range(5):
        service.on_message(_message("list", {"correlation_id": n}))
    (reply,) = service.recorder.replies("list")
    assert reply["correlation_id"] == 4 and reply["error"]["code"] == 50301


def test_v5_response_topic_gets_the_same_reply_with_correlation_data(service):
    service.start()
    service.on_message(_message("list", {}, response_topic="client/9/replies",
                                correlation=b"\x01\x02"))
    service.recorder.replies("list")
    sent = [(t, c) for t, _, _, c in service.recorder.sent]
    assert sent == [(f"{BASE}/list/response", b"\x01\x02"), ("client/9/replies", b"\x01\x02")]


def test_other_topics_are_ignored(service):
    service.on_message(InboundMessage(topic=f"{BASE}/delete", payload=b"{}", retain=False,
                                      qos=1, received_at=0.0))
    assert service.recorder.sent == []


def _created(fake_mppg):
    return sorted(float(r.definition["amount"]) for r in fake_mppg.requests.values())


def test_two_clients_reusing_one_correlation_id_each_get_their_own(service, fake_mppg):
    service.start()
    service.on_message(_message("create", {"correlation_id": 1, "amount": 1, "relay": False},
                                response_topic="pos/1/replies", correlation=b"a"))
    service.on_message(_message("create", {"correlation_id": 1, "amount": 99,
                                           "relay": False},
                                response_topic="pos/2/replies", correlation=b"b"))
    service.on_message(_message("create", {"correlation_id": 1, "client_id": "pos-3",
                                           "amount": 5, "relay": False}))
    replies = service.recorder.replies("create", 3)
    amounts = sorted(r["result"]["definition"]["amount"] for r in replies)
    assert amounts == [1, 5, 99] and all(r["ok"] for r in replies)
    assert _created(fake_mppg) == [1, 5, 99]
    by_topic = {t: json.loads(p) for t, p, _, _ in service.recorder.sent if "pos/" in t}
    assert by_topic["pos/1/replies"]["result"]["definition"]["amount"] == 1
    assert by_topic["pos/2/replies"]["result"]["definition"]["amount"] == 99
    assert [r.get("client_id") for r in replies].count("pos-3") == 1


def test_same_correlation_id_with_a_different_body_is_refused(service, fake_mppg):
    service.start()
    service.on_message(_message("create", {"correlation_id": "dup", "amount": 1,
                                           "relay": False}))
    service.recorder.replies("create", 1)
    service.on_message(_message("create", {"correlation_id": "dup", "amount": 99,
                                           "relay": False}))
    first, second = service.recorder.replies("create", 2)
    assert first["ok"] is True and first["result"]["definition"]["amount"] == 1
    assert second["ok"] is False and "result" not in second
    assert second["error"]["code"] == 40901 and second["error"]["source"] == "bridge"
    assert _created(fake_mppg) == [1]  # nothing was created for 99.00, nothing mixed up


def test_a_failed_request_may_be_retried_with_its_correlation_id(service, fake_mppg):
    service.start()
    fake_mppg.server_error = True
    body = {"correlation_id": "r", "amount": 2, "relay": False}
    service.on_message(_message("create", body))
    service.recorder.replies("create", 1)
    fake_mppg.server_error = False
    service.on_message(_message("create", body))
    failed, succeeded = service.recorder.replies("create", 2)
    assert failed["error"]["code"] == 50000 and succeeded["ok"] is True


def test_create_defaults_to_one_use(service, fake_mppg):
    service.start()
    service.on_message(_message("create", {"amount": 1, "relay": False}))
    (reply,) = service.recorder.replies("create")
    assert reply["result"]["definition"]["usageCountLimit"] == 1
    service.on_message(_message("create", {"amount": 1, "usageCountLimit": 0, "relay": False}))
    assert service.recorder.replies("create", 2)[1]["result"]["definition"][
        "usageCountLimit"] == 0  # unlimited, when asked for


def test_update_changes_only_the_fields_given(service, fake_mppg):
    rid = fake_mppg.seed("3.00", usageCountLimit=5, isEnabled=False, customerTranID="t-9")
    service.start()
    service.on_message(_message("update", {"paymentRequestID": rid, "amount": 4.5}))
    (reply,) = service.recorder.replies("update")
    definition = reply["result"]["definition"]
    assert reply["ok"] and definition["amount"] == 4.5
    assert definition["isEnabled"] is False and reply["result"]["status"] == 0  # still off
    assert definition["usageCountLimit"] == 5 and definition["customerTranID"] == "t-9"
    assert reply["relay"] == "final"


@pytest.mark.parametrize("failure", ["garbage", "slow"])
def test_an_ambiguous_create_is_looked_up_before_failing(make_service, fake_mppg, failure):
    service = make_service(request_timeout=1.0)
    fake_mppg.create_failure = failure
    fake_mppg.slow_seconds = 3.0
    service.start()
    service.on_message(_message("create", {"amount": 7, "customerTranID": "order-7",
                                           "relay": False}))
    (reply,) = service.recorder.replies("create", timeout=10)
    (stored,) = fake_mppg.requests
    assert reply["ok"] is True and reply["recovered"] is True
    assert reply["result"]["paymentRequestID"] == stored and reply["result"]["paymentLink"]
    assert service.registry.get_sample_value(
        "magtek_bridge_payment_creates_recovered_total") == 1


def test_an_ambiguous_create_without_customer_tran_id_says_so(make_service, fake_mppg):
    service = make_service()
    fake_mppg.create_failure = "garbage"
    service.start()
    service.on_message(_message("create", {"amount": 7, "relay": False}))
    (reply,) = service.recorder.replies("create")
    assert reply["error"]["code"] == 50200 and "customerTranID" in reply["error"]["message"]


def test_an_ambiguous_create_that_made_nothing_is_reported_as_such(make_service, fake_mppg):
    service = make_service()
    fake_mppg.create_failure = "garbage"
    fake_mppg.create_stores = False  # the failure is genuine: nothing was stored
    fake_mppg.seed("7.00", customerTranID="order-8", created=datetime.now(UTC) - timedelta(
        hours=2))  # an older request with the same id must not be taken for it
    service.start()
    service.on_message(_message("create", {"amount": 7, "customerTranID": "order-8",
                                           "relay": False}))
    (reply,) = service.recorder.replies("create")
    assert reply["error"]["code"] == 50200 and "safe to retry" in reply["error"]["message"]


def test_workers_run_requests_side_by_side_and_each_has_a_deadline(make_service, fake_mppg):
    service = make_service(workers=3, operation_timeout=1.0)
    fake_mppg.gate = threading.Event()  # MPPG hangs
    service.start()
    for n in range(3):
        service.on_message(_message("list", {"correlation_id": n}))
    assert fake_mppg.wait_in_flight(3)  # three calls at MPPG at once, not one after another
    replies = service.recorder.replies("list", 3, timeout=10)
    assert {r["error"]["code"] for r in replies} == {50400}
    assert {r["error"]["source"] for r in replies} == {"bridge"}
    fake_mppg.gate.set()
    fake_mppg.gate = None
    service.on_message(_message("list", {"correlation_id": "after"}))
    assert service.recorder.replies("list", 4)[-1]["ok"] is True


def test_v5_correlation_data_alone_also_deduplicates(service, fake_mppg):
    service.start()
    for _ in range(2):  # a QoS 1 redelivery, no correlation_id in the body
        service.on_message(_message("create", {"amount": 3, "relay": False},
                                    response_topic="pos/5/in", correlation=b"\x07"))
    first, second = service.recorder.replies("create", 2)
    assert first == second and len(fake_mppg.requests) == 1


def _acked_message(op: str, body, events: list[str], *, duplicate=False) -> InboundMessage:
    return _message(op, body, duplicate=duplicate, ack=lambda: events.append("ack"))


def test_a_request_is_acknowledged_only_once_it_is_answered(service, fake_mppg):
    events: list[str] = []
    recorder_publish = service.recorder.publish

    def publish(topic, payload, **kwargs):
        events.append("reply")
        recorder_publish(topic, payload, **kwargs)

    service.recorder.publish = publish
    service.start()
    service.on_message(_acked_message("create", {"amount": 3, "relay": False}, events))
    service.recorder.replies("create")
    assert wait_until(lambda: events == ["reply", "ack"], 5.0)


def test_refused_and_foreign_messages_are_acknowledged_at_once(service):
    events: list[str] = []
    retained = _message("create", b"{}", retain=True, ack=lambda: events.append("ack"))
    foreign = InboundMessage(topic=f"{ROOT}/Other", payload=b"{}", retain=False, qos=1,
                             received_at=time.monotonic(), ack=lambda: events.append("ack"))
    service.on_message(retained)  # not started: only the I/O loop's side runs
    service.on_message(foreign)
    assert events == ["ack", "ack"]


def test_a_redelivered_create_finds_the_request_it_made_before(service, fake_mppg):
    # The bridge created it, then stopped before its acknowledgement reached the broker: the
    # broker delivers it again (duplicate), and no second payment request is made.
    body = {"amount": 4, "customerTranID": "order-41", "relay": False}
    events: list[str] = []
    service.start()
    service.on_message(_acked_message("create", body, events))
    (first,) = service.recorder.replies("create")
    service.on_message(_acked_message("create", body, events, duplicate=True))
    second = service.recorder.replies("create", 2)[-1]
    assert len(fake_mppg.requests) == 1
    assert second["ok"] is True and second["recovered"] is True
    assert second["result"]["paymentRequestID"] == first["result"]["paymentRequestID"]


def test_a_redelivered_create_that_never_ran_is_created(service, fake_mppg):
    events: list[str] = []
    service.start()
    service.on_message(_acked_message("create", {"amount": 5, "customerTranID": "order-51",
                                                 "relay": False}, events, duplicate=True))
    (reply,) = service.recorder.replies("create")
    assert reply["ok"] is True and "recovered" not in reply
    assert len(fake_mppg.requests) == 1

