"""The client against the local fake service: the four endpoints and their errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from bridge.mppg.client import MppgClient
from bridge.mppg.definition import parse_definition, parse_list_query
from bridge.mppg.errors import (
    ErrorCode,
    MppgAuthenticationError,
    MppgAuthorizationError,
    MppgError,
    MppgInputError,
    MppgNotSetUpError,
    MppgServerError,
    MppgUnavailableError,
)
from bridge.mppg.models import PaymentRequestStatus


def test_create_answers_as_the_spec_shows_and_get_has_the_links(mppg_client, fake_mppg):
    detail = mppg_client.create(parse_definition(
        {"amount": "12.50", "usageCountLimit": 1, "customerTranID": "order-1",
         "customerTranRef": "20240101"}))
    # §3.4: paymentLink and websocketToken null on create; transactions null is read as [].
    assert detail.payment_link is None and detail.websocket_token is None
    assert detail.transactions == []
    # §7.4 types it Integer: read, and relayed, as MPPG sent it.
    assert detail.definition is not None and detail.definition.customer_tran_ref == 20240101
    fetched = mppg_client.get(detail.payment_request_id)
    assert fetched.payment_link and detail.payment_request_id in fetched.payment_link
    assert fetched.websocket_token and fetched.websocket_token.startswith("ws://127.0.0.1:")
    assert detail.status == PaymentRequestStatus.ACTIVE
    assert detail.definition is not None
    assert detail.definition.amount == Decimal("12.5")
    assert detail.definition.processor_name == "FAKE PROCESSOR"  # the merchant's default
    assert fake_mppg.calls[-2] == ("POST", "/PaymentRequest/api/PaymentRequest")


def test_get_and_update(mppg_client):
    created = mppg_client.create(parse_definition({"amount": 10, "usageCountLimit": 40}))
    fetched = mppg_client.get(created.payment_request_id)
    assert fetched.payment_request_id == created.payment_request_id
    again = mppg_client.get(created.payment_request_id)
    assert fetched.websocket_token != again.websocket_token  # a fresh token per GET
    updated = mppg_client.update(created.payment_request_id, parse_definition(
        {"amount": 11, "usageCountLimit": 40, "isEnabled": False}))
    assert updated.definition is not None and updated.definition.amount == 11
    assert updated.status == PaymentRequestStatus.DISABLED


def test_list_filters_and_pagination(mppg_client, fake_mppg):
    now = datetime.now(UTC)
    old = fake_mppg.seed("5.00", created=now - timedelta(days=90))
    ids = [fake_mppg.seed(f"{n}.00", created=now - timedelta(days=n), usageCountLimit=1)
           for n in range(1, 6)]
    fake_mppg.pay(ids[0])  # -> Paid
    default = mppg_client.list_requests()
    assert default.total_records_available == 5  # the 60-day default window leaves `old` out
    assert old not in {r.payment_request_id for r in default.requests}
    page2 = mppg_client.list_requests(parse_list_query({"ps": 2, "pn": 2}))
    assert page2.total_records_available == 5 and len(page2.requests) == 2
    page3 = mppg_client.list_requests(parse_list_query({"ps": 2, "pn": 3}))
    assert len(page3.requests) == 1
    paid = mppg_client.list_requests(parse_list_query({"st": 4}))
    assert [r.payment_request_id for r in paid.requests] == [ids[0]]
    assert paid.requests[0].current_usage_count == 1
    window = mppg_client.list_requests(parse_list_query({
        "ds": (now - timedelta(days=100)).strftime("%Y%m%d"),
        "de": (now - timedelta(days=80)).strftime("%Y%m%d")}))
    assert [r.payment_request_id for r in window.requests] == [old]


def test_page_past_the_end_is_refused_by_the_service(mppg_client, fake_mppg):
    fake_mppg.seed()
    with pytest.raises(MppgInputError) as info:
        mppg_client.list_requests(parse_list_query({"ps": 1, "pn": 2}))
    assert info.value.code == ErrorCode.INVALID_PAGE_NUMBER
    assert info.value.http_status == 400


def test_unknown_id_is_40018(mppg_client):
    # The fake answers 404 with an empty body, as an ASP.NET route does for a missing id.
    with pytest.raises(MppgInputError) as info:
        mppg_client.get("00000000-0000-0000-0000-000000000000")
    assert info.value.code == ErrorCode.INVALID_PAYMENT_REQUEST_ID
    assert info.value.http_status == 404 and info.value.source == "mppg"
    with pytest.raises(MppgInputError) as info:
        mppg_client.update("00000000-0000-0000-0000-000000000000",
                           parse_definition({"amount": 1}))
    assert info.value.payment_request_id == "00000000-0000-0000-0000-000000000000"


def test_wrong_password_is_40100(fake_mppg):
    with MppgClient(fake_mppg.base_url, fake_mppg.username, "wrong") as client, pytest.raises(
            MppgAuthenticationError) as info:
        client.list_requests()
    assert (info.value.code, info.value.http_status) == (40100, 401)


@pytest.mark.parametrize(("switch", "kind", "code", "status"), [
    ("server_error", MppgServerError, 50000, 500),
    ("not_set_up", MppgNotSetUpError, 50001, 500),
    ("forbidden", MppgAuthorizationError, 40300, 403),
])
def test_service_side_failures(mppg_client, fake_mppg, switch, kind, code, status):
    setattr(fake_mppg, switch, True)
    with pytest.raises(kind) as info:
        mppg_client.create(parse_definition({"amount": 1}))
    assert (info.value.code, info.value.http_status) == (code, status)
    assert info.value.mag_tran_id  # MPPG's tracking id is kept for support calls


def test_service_down_is_unavailable(fake_mppg):
    client = MppgClient(fake_mppg.base_url, "u", "p", connect_timeout=1.0, request_timeout=2.0)
    fake_mppg.stop()
    with client, pytest.raises(MppgUnavailableError) as info:
        client.list_requests()
    assert info.value.source == "bridge"


# The fake's own rules, sent raw (the bridge would refuse these before sending).
@pytest.mark.parametrize(("body", "code"), [
    (b'{"amount": 1.234}', 40023),
    (b'{"amount": 1, "taxAmount": 1.001}', 40024),
    (b'{"amount": 1, "transactionType": 2}', 40020),
    (b'{"amount": 1, "usageCountLimit": -1}', 40021),
    (b'{"amount": 1, "usageCountLimit": 2147483648}', 40021),
    (b'{"amount": 1, "expirationDate": "2000-01-01T00:00:00Z"}', 40022),
    (b'{"amount": 1, "customerTranID": "%s"}' % (b"x" * 257), 40026),
    (b'{"amount": 1, "customerTranRef": "%s"}' % (b"x" * 257), 40027),
    (b'{"amount": 1, "processorName": "%s"}' % (b"x" * 129), 40028),
    (b'{"amount": 1, "miscData": "%s"}' % (b"x" * 257), 40030),
    (b'{"amount": 1, "expirationDate": "2030-01-01T00:00:00Z", '
     b'"activationDate": "2030-01-02T00:00:00Z"}', 40022),
])
def test_fake_service_enforces_the_documented_rules(fake_mppg, body, code):
    response = httpx.post(f"{fake_mppg.base_url}/api/PaymentRequest", content=body,
                          auth=(fake_mppg.username, fake_mppg.password),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert "magTranID" in response.json()


@pytest.mark.parametrize(("query", "code"), [
    ("ds=2022-04-13", 40011), ("de=20221399", 40012), ("ds=20220422&de=20220421", 40013),
    ("ps=0", 40014), ("pn=0", 40015), ("ps=abc", 40016), ("st=7", 40017),
])
def test_fake_service_list_rules(fake_mppg, query, code):
    response = httpx.get(f"{fake_mppg.base_url}/api/PaymentRequest?{query}",
                         auth=(fake_mppg.username, fake_mppg.password))
    assert (response.status_code, response.json()["code"]) == (400, code)


@pytest.mark.parametrize("body", [
    b"{not json", b'{"amount": "ten"}', b'{"amount": 1, "termsAndTransactionInfo": 7}',
    b'{"amount": 1, "usageCountLimit": 1.5}', b'{"amount": 1, "activationDate": "soon"}',
])
def test_fake_service_answers_binding_failures_as_aspnet_does(fake_mppg, body):
    response = httpx.post(f"{fake_mppg.base_url}/api/PaymentRequest", content=body,
                          auth=(fake_mppg.username, fake_mppg.password),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    problem = response.json()
    assert "code" not in problem and problem["status"] == 400 and problem["errors"]


@pytest.mark.parametrize("body", [
    {"amount": 1, "activationDate": "2030-05-06T09:42:46.000Z",
     "expirationDate": "2030-05-06T09:42:46.000Z"},           # equal, as the spec's example
    {"amount": 1, "expirationDate": "2001-01-01T00:00:00Z",
     "activationDate": "2000-01-01T00:00:00Z"},               # past: accepted, Expired
    {"amount": 1, "activationDate": "2030-01-01T00:00:00",
     "expirationDate": "2030-02-01T00:00:00"},                # no zone, as MPPG writes them
])
def test_times_the_spec_allows_are_accepted(mppg_client, body):
    detail = mppg_client.create(parse_definition(body))
    assert detail.status in (PaymentRequestStatus.PENDING, PaymentRequestStatus.EXPIRED)


def test_bridge_reads_aspnet_validation_bodies_as_40010():
    problem = json.dumps({
        "type": "https://tools.ietf.org/html/rfc7231#section-6.5.1",
        "title": "One or more validation errors occurred.", "status": 400,
        "errors": {"$.amount": ["The JSON value could not be converted"]}}).encode()
    with _client_answering(400, problem) as client, pytest.raises(MppgInputError) as info:
        client.create(parse_definition({"amount": 1}))
    error = info.value
    assert (error.code, error.http_status, error.source) == (40010, 400, "mppg")
    assert "amount" in error.message


def _client_answering(status: int, body: bytes, content_type: str = "application/json"):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"Content-Type": content_type})

    return MppgClient("https://mppg.test/PaymentRequest", "u", "p",
                      transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("status", "body", "code"), [
    (400, b"", 40010),
    (400, b'{"title": "bad"}', 40010),
    (401, b"", 40100),
    (403, b"", 40300),
    (404, b"", 40018),      # for an id: no such payment request
    (405, b"", 50200),      # the API path is wrong: a bridge configuration problem
    (409, b"", 40010),
    (500, b"<html>oops</html>", 50000),
    (502, b"", 50000),
])
def test_error_bodies_without_a_code_map_by_http_status(status, body, code):
    with _client_answering(status, body) as client, pytest.raises(MppgError) as info:
        client.get("84bad434-f162-4ea8-af26-58a518c4a56c")
    assert (info.value.code, info.value.http_status) == (code, status)


def test_every_shape_the_spec_shows_is_read():
    detail = json.dumps({
        "paymentRequestID": "046adde9-acc0-45d0-ae65-dd3e0472ded8", "paymentLink": None,
        "websocketToken": None, "status": 3, "transactions": None,
        "definition": {"customerTranRef": 123456, "amount": 1.4,
                       "activationDate": "2022-05-11T11:26:36.52",
                       "expirationDate": "2022-05-11T11:26:36.52Z"}}).encode()
    with _client_answering(200, detail) as client:
        got = client.get("046adde9-acc0-45d0-ae65-dd3e0472ded8")
    assert got.transactions == [] and got.definition is not None
    assert got.definition.customer_tran_ref == 123456
    assert got.to_wire()["definition"]["customerTranRef"] == 123456
    rows = json.dumps([{"paymentRequestID": "a-1", "customerTranRef": "x", "amount": 10,
                        "dateCreated": "2022-04-21T02:05:22.6-07:00",
                        "activationDate": "2022-04-21T23:05:01.743", "status": 2}]).encode()
    with _client_answering(200, rows) as client:
        listing = client.list_requests()
    assert [r.payment_request_id for r in listing.requests] == ["a-1"]
    assert listing.total_records_available is None


def test_list_as_a_bare_array_from_the_fake(mppg_client, fake_mppg):
    fake_mppg.list_as_array = True
    rid = fake_mppg.seed("2.00", customerTranRef="77")
    listing = mppg_client.list_requests()
    assert [r.payment_request_id for r in listing.requests] == [rid]
    assert listing.requests[0].activation_date is not None
    assert listing.requests[0].activation_date.tzinfo is None  # as MPPG writes list rows
