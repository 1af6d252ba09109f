"""The MQTT request/response service without a broker: messages in, replies recorded."""

from __future__ import annotations

import json
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from bridge.config import MppgSettings
from bridge.mppg.service import PaymentRequestService
from bridge.mqtt.link import InboundMessage

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


def _message(op: str, body, *, retain=False, response_topic=None, correlation=None):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return InboundMessage(topic=f"{BASE}/{op}", payload=payload, retain=retain, qos=1,
                          received_at=time.monotonic(), response_topic=response_topic,
                          correlation_data=correlation)


@pytest.fixture
def service(fake_mppg):
    settings = MppgSettings(enabled=True, base_url=fake_mppg.base_url,
                            username=fake_mppg.username, password=fake_mppg.password,
                            relay_reconnect_min_delay=0.05, relay_reconnect_max_delay=0.2,
                            queue_size=4, processor_name="BRIDGE DEFAULT")
    registry = CollectorRegistry()
    svc = PaymentRequestService(settings, ROOT, registry=registry)
    svc.registry = registry  # type: ignore[attr-defined]
    recorder = Recorder()
    svc.attach(recorder)
    svc.recorder = recorder  # type: ignore[attr-defined]
    yield svc
    svc.stop()


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
