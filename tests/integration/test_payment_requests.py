"""Payment requests end to end: MQTT client -> real Mosquitto -> bridge -> fake MPPG (HTTP and
WebSocket) -> bridge -> Mosquitto -> client."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.mppg_fake import CARD_SENTINEL, FakeMppg
from tests.integration.harness import running_bridge, wait_until
from tests.integration.support import MqttProbe, make_properties

pytestmark = pytest.mark.integration

BASE = "MagTek/Bridge/testhost/PaymentRequest"
_ids = itertools.count(1)


@pytest.fixture
def fake_mppg() -> Iterator[FakeMppg]:
    with FakeMppg() as fake:
        yield fake


def mppg_section(fake: FakeMppg, **overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "enabled": True, "base_url": fake.base_url, "username": fake.username,
        "password": fake.password, "connect_timeout": 1.0, "request_timeout": 3.0,
        "relay_reconnect_min_delay": 0.05, "relay_reconnect_max_delay": 0.3,
    }
    section.update(overrides)
    return section


@contextmanager
def payment_bridge(broker, fake: FakeMppg, **overrides: Any):
    with running_bridge(broker, mppg=mppg_section(fake, **overrides)) as (app, _bus):
        assert app.link.wait_ready(10), "bridge link not subscribed"
        yield app


def call(probe: MqttProbe, op: str, body: dict[str, Any] | bytes,
         timeout: float = 10.0) -> dict[str, Any]:
    """Publish one request and return its reply (matched by correlation id)."""
    if isinstance(body, dict):
        correlation = f"t-{next(_ids)}"
        payload = json.dumps({"correlation_id": correlation, **body}).encode()
    else:
        correlation, payload = None, body
    probe.publish(f"{BASE}/{op}", payload)
    message = probe.wait_for(
        lambda m: m.topic == f"{BASE}/{op}/response"
        and json.loads(m.payload).get("correlation_id") == correlation, timeout)
    reply = json.loads(message.payload)
    assert reply["op"] == op
    return reply


def test_create_relays_transactions_in_order_and_status_to_paid(broker, fake_mppg,
                                                                  probe_factory):
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg) as app:
        reply = call(probe, "create", {"amount": 12.50, "usageCountLimit": 2,
                                       "customerTranID": "order-42"})
        assert reply["ok"] is True and reply["relay"] == "started"
        result = reply["result"]
        rid = result["paymentRequestID"]
        assert rid in result["paymentLink"]
        assert result["websocketToken"].startswith("ws://127.0.0.1:")
        assert result["definition"]["amount"] == 12.5
        status_topic, tx_topic = f"{BASE}/{rid}/Status", f"{BASE}/{rid}/Transaction"
        active = json.loads(probe.wait_for(status_topic).payload)
        assert active["statusName"] == "Active" and active["usageCountLimit"] == 2

        assert fake_mppg.wait_listeners(rid, 1)
        sent = [fake_mppg.pay(rid, approved=False), fake_mppg.pay(rid), fake_mppg.pay(rid)]
        relayed = [json.loads(probe.wait_for(tx_topic).payload) for _ in sent]
        assert relayed == sent
        assert CARD_SENTINEL in relayed[0]["transactionResponse"]
        final = probe.wait_for(lambda m: m.topic == status_topic
                               and json.loads(m.payload)["status"] == 4)
        assert json.loads(final.payload)["currentUsageCount"] == 2
        assert fake_mppg.wait_no_listeners(rid)
        assert app.payments is not None
        assert wait_until(lambda: app.payments.relays.active() == [], 5)

    # Status is retained: a consumer that comes later still learns it was paid.
    late = probe_factory(f"{BASE}/+/Status")
    stored = late.wait_for(status_topic)
    assert stored.retain and json.loads(stored.payload)["statusName"] == "Paid"


def test_get_starts_a_relay_and_update_changes_the_request(broker, fake_mppg, probe_factory):
    rid = fake_mppg.seed("3.00", usageCountLimit=1)
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg):
        got = call(probe, "get", {"paymentRequestID": rid})
        assert got["ok"] and got["relay"] == "started"
        assert got["result"]["definition"]["amount"] == 3.0
        again = call(probe, "get", {"paymentRequestID": rid})
        assert again["relay"] == "running"  # one relay per request
        updated = call(probe, "update", {"paymentRequestID": rid, "amount": 4.25,
                                         "usageCountLimit": 1, "relay": False})
        assert updated["ok"] and updated["result"]["definition"]["amount"] == 4.25
        assert fake_mppg.wait_listeners(rid, 1)
        fake_mppg.pay(rid)
        tx = json.loads(probe.wait_for(f"{BASE}/{rid}/Transaction").payload)
        assert tx["detail"]["authorizedAmount"] == 4.25
        probe.wait_for(lambda m: m.topic == f"{BASE}/{rid}/Status"
                       and json.loads(m.payload)["statusName"] == "Paid")


def test_list_with_filters_and_pagination(broker, fake_mppg, probe_factory):
    now = datetime.now(UTC)
    old = fake_mppg.seed("9.00", created=now - timedelta(days=70))
    recent = [fake_mppg.seed(f"{n}.00", created=now - timedelta(days=n), usageCountLimit=1)
              for n in range(1, 6)]
    fake_mppg.pay(recent[2])
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg):
        everything = call(probe, "list", {})
        assert everything["result"]["totalRecordsAvailable"] == 5
        page = call(probe, "list", {"ps": 2, "pn": 3})["result"]
        assert page["totalRecordsAvailable"] == 5 and len(page["requests"]) == 1
        paid = call(probe, "list", {"st": 4})["result"]
        assert [r["paymentRequestID"] for r in paid["requests"]] == [recent[2]]
        window = call(probe, "list", {"ds": (now - timedelta(days=80)).strftime("%Y%m%d"),
                                      "de": (now - timedelta(days=65)).strftime("%Y%m%d")})
        assert [r["paymentRequestID"] for r in window["result"]["requests"]] == [old]
        beyond = call(probe, "list", {"ps": 2, "pn": 4})  # only the service knows the end
        assert beyond["error"]["code"] == 40015 and beyond["error"]["httpStatus"] == 400


@pytest.mark.parametrize(("op", "body", "code"), [
    ("create", {"amount": 1.005}, 40023),
    ("create", {"amount": 1, "taxAmount": -2}, 40024),
    ("create", {"amount": 1, "usageCountLimit": -1}, 40021),
    ("create", {"amount": 1, "transactionType": 2}, 40020),
    ("create", {"amount": 1, "customerTranRef": "r" * 257}, 40027),
    ("create", {"amount": 1, "expirationDate": "2001-01-01T00:00:00Z",
                "activationDate": "2002-01-01T00:00:00Z"}, 40022),
    ("list", {"ds": 20240110, "de": 20240101}, 40013),
    ("list", {"st": 9}, 40017),
    ("get", {"paymentRequestID": "00000000-0000-0000-0000-000000000000"}, 40018),
])
def test_validation_errors_have_documented_codes(broker, fake_mppg, probe_factory, op, body,
                                                 code):
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg):
        reply = call(probe, op, body)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code and reply["error"]["source"] == "mppg"
    assert "result" not in reply


def test_bad_json_is_answered_and_the_bridge_keeps_going(broker, fake_mppg, probe_factory):
    probe = probe_factory(f"{BASE}/#", "MagTek/Bridge/testhost/State")
    with payment_bridge(broker, fake_mppg):
        bad = call(probe, "create", b"{this is not json")
        assert bad["correlation_id"] is None and bad["error"]["code"] == 40010
        assert call(probe, "list", {})["ok"] is True


def test_wrong_credentials_answer_40100(broker, fake_mppg, probe_factory):
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg, password="not-the-password"):
        reply = call(probe, "list", {})
    assert reply["error"]["code"] == 40100 and reply["error"]["httpStatus"] == 401


def test_server_errors_answer_50000_then_recover(broker, fake_mppg, probe_factory):
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg):
        fake_mppg.server_error = True
        reply = call(probe, "create", {"amount": 1})
        assert reply["error"]["code"] == 50000 and reply["error"]["httpStatus"] == 500
        assert reply["error"]["magTranID"]
        fake_mppg.server_error = False
        assert call(probe, "create", {"amount": 1, "relay": False})["ok"] is True


def test_bridge_survives_the_service_being_down(broker, fake_mppg, probe_factory):
    probe = probe_factory(f"{BASE}/#", "MagTek/Bridge/testhost/State")
    with payment_bridge(broker, fake_mppg) as app:
        created = call(probe, "create", {"amount": 1, "usageCountLimit": 1})
        rid = created["result"]["paymentRequestID"]
        assert fake_mppg.wait_listeners(rid, 1)
        fake_mppg.stop()
        for op, body in (("create", {"amount": 2}), ("list", {}),
                         ("get", {"paymentRequestID": rid})):
            reply = call(probe, op, body)
            assert reply["error"]["code"] in (50300, 50400), reply
            assert reply["error"]["source"] == "bridge"
        ok, details = app.liveness()
        assert ok, details
        assert app.link.connected.is_set()
        fake_mppg.start()  # same ports: the relay finds its request again
        assert fake_mppg.wait_listeners(rid, 1, timeout=10)
        fake_mppg.pay(rid)
        probe.wait_for(lambda m: m.topic == f"{BASE}/{rid}/Status"
                       and json.loads(m.payload)["statusName"] == "Paid", timeout=10)
        assert call(probe, "list", {})["ok"] is True


def test_mqtt5_response_topic_and_correlation_data(broker, fake_mppg, probe_factory):
    probe = probe_factory(f"{BASE}/#", "client/7/inbox")
    with payment_bridge(broker, fake_mppg):
        probe.publish(f"{BASE}/list", b'{"correlation_id": "v5"}',
                      properties=make_properties(response_topic="client/7/inbox",
                                                 correlation_data=b"\x00corr"))
        direct = probe.wait_for("client/7/inbox")
        assert direct.correlation_data == b"\x00corr"
        assert json.loads(direct.payload)["correlation_id"] == "v5"
        on_op = probe.wait_for(f"{BASE}/list/response")
        assert on_op.payload == direct.payload


def test_credentials_from_files_and_relay_limit(broker, fake_mppg, probe_factory,
                                                tmp_path: Path):
    (tmp_path / "user").write_text(fake_mppg.username + "\n")
    (tmp_path / "pass").write_text(fake_mppg.password + "\n")
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg, username=None, password=None,
                        username_file=str(tmp_path / "user"),
                        password_file=str(tmp_path / "pass"), max_relays=1):
        first = call(probe, "create", {"amount": 1})
        second = call(probe, "create", {"amount": 1})
    assert first["relay"] == "started"
    assert second["ok"] is True and second["relay"] == "limit"


def test_retained_request_is_refused(broker, fake_mppg, probe_factory):
    probe = probe_factory(f"{BASE}/+/response")
    probe.publish(f"{BASE}/create", b'{"correlation_id": "stale", "amount": 1}', retain=True)
    try:
        with payment_bridge(broker, fake_mppg):
            reply = json.loads(probe.wait_for(f"{BASE}/create/response").payload)
        assert reply["correlation_id"] == "stale" and reply["error"]["code"] == 40900
        assert fake_mppg.requests == {}
    finally:
        probe.publish(f"{BASE}/create", b"", retain=True)  # clear it
