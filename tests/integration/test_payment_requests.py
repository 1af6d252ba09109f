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
def payment_bridge(broker, fake: FakeMppg, *, mqtt: dict[str, Any] | None = None,
                   **overrides: Any):
    with running_bridge(broker, mppg=mppg_section(fake, **overrides),
                        mqtt=mqtt or {}) as (app, _bus):
        assert app.payments is not None and app.payments.link is not None
        assert app.payments.link.wait_ready(10), "payment session not subscribed"
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
        # MPPG's create answer had null links (the fake follows §3.4); the reply has them.
        assert not fake_mppg.links_on_create
        assert rid in result["paymentLink"]
        assert result["websocketToken"].startswith("ws://127.0.0.1:")
        assert result["definition"]["amount"] == 12.5
        status_topic, tx_topic = f"{BASE}/{rid}/State", f"{BASE}/{rid}/Transaction"
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
    late = probe_factory(f"{BASE}/+/State")
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
        probe.wait_for(lambda m: m.topic == f"{BASE}/{rid}/State"
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


# "bridge": a rule the document states, checked before sending; "mppg": left to the service.
@pytest.mark.parametrize(("op", "body", "code", "source"), [
    ("create", {"amount": 1.005}, 40023, "bridge"),
    ("create", {"amount": 1, "taxAmount": -2}, 40024, "mppg"),
    ("create", {"amount": 1, "usageCountLimit": -1}, 40021, "bridge"),
    ("create", {"amount": 1, "transactionType": 2}, 40020, "bridge"),
    ("create", {"amount": 1, "customerTranRef": "r" * 257}, 40027, "bridge"),
    ("create", {"amount": 1, "expirationDate": "2001-01-01T00:00:00Z",
                "activationDate": "2002-01-01T00:00:00Z"}, 40022, "mppg"),
    ("list", {"ds": 20240110, "de": 20240101}, 40013, "bridge"),
    ("list", {"st": 9}, 40017, "bridge"),
    ("get", {"paymentRequestID": "00000000-0000-0000-0000-000000000000"}, 40018, "mppg"),
])
def test_validation_errors_have_documented_codes(broker, fake_mppg, probe_factory, op, body,
                                                 code, source):
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg):
        reply = call(probe, op, body)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code and reply["error"]["source"] == source
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
        probe.wait_for(lambda m: m.topic == f"{BASE}/{rid}/State"
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


def test_the_documents_own_examples_are_accepted(broker, fake_mppg, probe_factory):
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg):
        equal = call(probe, "create", {"amount": 1, "activationDate": "2030-05-06T09:42:46Z",
                                       "expirationDate": "2030-05-06T09:42:46Z"})
        past = call(probe, "create", {"amount": 1, "activationDate": "2000-01-01T00:00:00Z",
                                      "expirationDate": "2001-01-01T00:00:00Z"})
        rid = past["result"]["paymentRequestID"]
        row = next(r for r in call(probe, "list", {"ds": 20000101})["result"]["requests"]
                   if r["paymentRequestID"] == rid)
        # MPPG's list rows have no zone: copying them back into an update works.
        assert "Z" not in row["expirationDate"] and "+" not in row["expirationDate"]
        copied = call(probe, "update", {"paymentRequestID": rid, "relay": False,
                                        "expirationDate": "2031-01-01T00:00:00",
                                        "activationDate": row["activationDate"]})
    assert equal["ok"] and equal["result"]["status"] == 1  # Pending
    assert past["ok"] and past["result"]["status"] == 3 and past["relay"] == "final"
    assert copied["ok"] and copied["result"]["status"] == 2, copied


def test_two_clients_reusing_one_correlation_id(broker, fake_mppg, probe_factory):
    """Two POS clients whose counters both start at 1, replies to their own inboxes."""
    pos1 = probe_factory("pos/1/inbox")
    pos2 = probe_factory("pos/2/inbox")
    with payment_bridge(broker, fake_mppg):
        for probe, inbox, amount in ((pos1, "pos/1/inbox", 1.00), (pos2, "pos/2/inbox", 99.00)):
            probe.publish(f"{BASE}/create", json.dumps(
                {"correlation_id": 1, "amount": amount, "relay": False}).encode(),
                properties=make_properties(response_topic=inbox, correlation_data=b"1"))
        first = json.loads(pos1.wait_for("pos/1/inbox").payload)
        second = json.loads(pos2.wait_for("pos/2/inbox").payload)
        # The same client reusing its id for another amount is refused, not given the first.
        pos1.publish(f"{BASE}/create", json.dumps(
            {"correlation_id": 1, "amount": 50.00, "relay": False}).encode(),
            properties=make_properties(response_topic="pos/1/inbox", correlation_data=b"1"))
        third = json.loads(pos1.wait_for(lambda m: m.topic == "pos/1/inbox"
                                         and json.loads(m.payload)["ok"] is False).payload)
    assert first["result"]["definition"]["amount"] == 1
    assert second["result"]["definition"]["amount"] == 99
    assert first["result"]["paymentRequestID"] != second["result"]["paymentRequestID"]
    assert third["error"]["code"] == 40901 and third["error"]["source"] == "bridge"
    assert sorted(float(r.definition["amount"]) for r in fake_mppg.requests.values()) == [1, 99]


def test_bridge_restart_in_the_middle_of_a_relay(broker, fake_mppg, probe_factory,
                                                 tmp_path: Path):
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg, state_dir=str(tmp_path)):
        created = call(probe, "create", {"amount": 4, "usageCountLimit": 2})
        rid = created["result"]["paymentRequestID"]
        assert fake_mppg.wait_listeners(rid, 1)
        live = fake_mppg.pay(rid)
        probe.wait_for(f"{BASE}/{rid}/Transaction")
    assert fake_mppg.wait_no_listeners(rid)
    assert json.loads((tmp_path / "mppg-relays.json").read_text())["relays"][rid] == [
        live["detail"]["transactionId"]]
    missed = fake_mppg.pay(rid)  # while the bridge is down: now Paid
    with payment_bridge(broker, fake_mppg, state_dir=str(tmp_path)) as app:
        tx = json.loads(probe.wait_for(f"{BASE}/{rid}/Transaction", timeout=10).payload)
        paid = probe.wait_for(lambda m: m.topic == f"{BASE}/{rid}/State"
                              and json.loads(m.payload)["statusName"] == "Paid", timeout=10)
        assert app.payments is not None
        assert wait_until(lambda: app.payments.relays.active() == [], 5)
    again = [m for m in probe.drain() if m.topic == f"{BASE}/{rid}/Transaction"]
    assert tx["detail"]["transactionId"] == missed["detail"]["transactionId"]
    assert tx["recovered"] is True and again == []  # each transaction published once
    assert json.loads(paid.payload)["currentUsageCount"] == 2
    assert json.loads((tmp_path / "mppg-relays.json").read_text())["relays"] == {}


def test_a_payment_made_while_the_relay_is_disconnected(broker, fake_mppg, probe_factory):
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg):
        rid = call(probe, "create", {"amount": 2})["result"]["paymentRequestID"]
        assert fake_mppg.wait_listeners(rid, 1)
        fake_mppg.ws_refuse = True  # the push service goes away; the relay cannot reconnect
        fake_mppg.drop_sockets(rid)
        assert fake_mppg.listeners(rid) == 0
        summary = fake_mppg.pay(rid)  # nobody listening: never pushed
        fake_mppg.ws_refuse = False
        tx = json.loads(probe.wait_for(f"{BASE}/{rid}/Transaction", timeout=10).payload)
        probe.wait_for(lambda m: m.topic == f"{BASE}/{rid}/State"
                       and json.loads(m.payload)["statusName"] == "Paid", timeout=10)
    assert tx["detail"]["transactionId"] == summary["detail"]["transactionId"]
    assert tx["recovered"] is True and tx["detail"]["approved"] is True


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_request_sent_while_the_bridge_is_down_is_answered(broker, fake_mppg,
                                                            probe_factory, protocol):
    probe = probe_factory(f"{BASE}/+/response")
    mqtt = {"protocol": protocol}
    with payment_bridge(broker, fake_mppg, mqtt=mqtt):
        pass  # the payment session now exists on the broker
    probe.publish(f"{BASE}/create", json.dumps(
        {"correlation_id": "while-down", "amount": 3, "relay": False}).encode())
    with payment_bridge(broker, fake_mppg, mqtt=mqtt):
        reply = json.loads(probe.wait_for(f"{BASE}/create/response", timeout=10).payload)
    assert reply["correlation_id"] == "while-down" and reply["ok"] is True


def test_oversize_and_deep_requests_are_answered(broker, fake_mppg, probe_factory):
    probe = probe_factory(f"{BASE}/#")
    with payment_bridge(broker, fake_mppg, max_request_bytes=4096) as app:
        probe.publish(f"{BASE}/create", b"[" * 100_000 + b"]" * 100_000)
        big = json.loads(probe.wait_for(f"{BASE}/create/response").payload)
        probe.publish(f"{BASE}/list", b"[" * 1000 + b"]" * 1000)
        deep = json.loads(probe.wait_for(f"{BASE}/list/response").payload)
        assert call(probe, "list", {})["ok"] is True  # and it keeps going
        assert app.payments is not None
    assert big["error"] == {"code": 41300, "source": "bridge",
                            "message": "the request is 200000 bytes; at most 4096 are "
                                       "accepted"}
    assert deep["error"]["code"] == 40010 and deep["error"]["source"] == "bridge"
    assert fake_mppg.requests == {}
