"""HTTP answers -> exception types and codes, including answers the spec does not describe."""

from __future__ import annotations

import base64

import httpx
import pytest

from bridge.errors import BridgeError
from bridge.mppg.client import MppgClient
from bridge.mppg.errors import (
    BridgeCode,
    ErrorCode,
    MppgAuthenticationError,
    MppgAuthorizationError,
    MppgError,
    MppgInputError,
    MppgNotSetUpError,
    MppgProtocolError,
    MppgServerError,
    MppgUnavailableError,
    error_for,
)


@pytest.mark.parametrize(("code", "kind"), [
    (40010, MppgInputError), (40023, MppgInputError), (40030, MppgInputError),
    (40100, MppgAuthenticationError), (40300, MppgAuthorizationError),
    (50000, MppgServerError), (50001, MppgNotSetUpError),
])
def test_codes_pick_the_exception_type(code, kind):
    error = error_for(code, "")
    assert type(error) is kind
    assert isinstance(error, BridgeError)
    assert error.message  # the documented description fills an empty message
    assert error.to_dict()["code"] == code


def test_every_documented_code_is_known():
    assert len(ErrorCode) == 25
    assert min(ErrorCode) == 40010 and max(ErrorCode) == 50001


PASSWORD = "pw-SECRET"


def _client(handler) -> MppgClient:
    return MppgClient("https://mppg.test/PaymentRequest", "u", PASSWORD,
                      transport=httpx.MockTransport(handler))


def _answer(status: int, content: bytes = b"", content_type: str = "application/json"):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers={"Content-Type": content_type})
    return handler


def test_basic_auth_header_and_paths_are_sent():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"paymentRequestID": "a-1", "status": 2})

    with _client(handler) as client:
        client.get("a-1")
    assert seen[0].url == "https://mppg.test/PaymentRequest/api/PaymentRequest/a-1"
    expected = base64.b64encode(f"u:{PASSWORD}".encode()).decode()
    assert seen[0].headers["Authorization"] == f"Basic {expected}"


@pytest.mark.parametrize(("status", "body", "kind", "code"), [
    (401, b"", MppgAuthenticationError, 40100),
    (403, b"", MppgAuthorizationError, 40300),
    (500, b"<html>oops</html>", MppgServerError, 50000),
    (503, b"", MppgServerError, 50000),
    (404, b"", MppgProtocolError, BridgeCode.BAD_GATEWAY),
    (400, b'{"code": 40014, "message": "Invalid Page Size", "magTranID": "t"}',
     MppgInputError, 40014),
    (500, b'{"code": 50001, "message": "not set up"}', MppgNotSetUpError, 50001),
])
def test_error_answers(status, body, kind, code):
    with _client(_answer(status, body)) as client, pytest.raises(MppgError) as info:
        client.list_requests()
    assert type(info.value) is kind
    assert info.value.code == code
    assert info.value.http_status == status


def test_error_body_keeps_tracking_ids():
    body = b'{"code": 40019, "message": "bad", "magTranID": "t-1", "paymentRequestID": "p-1"}'
    with _client(_answer(400, body)) as client, pytest.raises(MppgInputError) as info:
        client.list_requests()
    assert info.value.to_dict() == {"code": 40019, "message": "bad", "source": "mppg",
                                    "httpStatus": 400, "magTranID": "t-1",
                                    "paymentRequestID": "p-1"}


@pytest.mark.parametrize("content", [b"not json", b'{"status": "x"}', b"[]"])
def test_unreadable_success_is_a_bad_gateway(content):
    with _client(_answer(200, content)) as client, pytest.raises(MppgProtocolError) as info:
        client.get("a-1")
    assert info.value.code == BridgeCode.BAD_GATEWAY
    assert info.value.source == "bridge"


def test_timeouts_and_refusals_are_unavailable():
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with _client(slow) as client, pytest.raises(MppgUnavailableError) as info:
        client.get("a-1")
    assert info.value.code == BridgeCode.TIMEOUT
    with _client(refused) as client, pytest.raises(MppgUnavailableError) as info:
        client.get("a-1")
    assert info.value.code == BridgeCode.UNAVAILABLE
    assert "mppg.test" in info.value.message and PASSWORD not in str(info.value)


def test_redirects_are_not_followed():
    # Following one would send the Basic credentials wherever MPPG's answer pointed.
    with _client(lambda r: httpx.Response(302, headers={"Location": "https://evil.test/"})
                 ) as client, pytest.raises(MppgProtocolError):
        client.get("a-1")


def test_bad_ids_never_reach_the_url():
    calls: list[httpx.Request] = []
    with _client(lambda r: calls.append(r) or httpx.Response(200)) as client, pytest.raises(
            MppgInputError):
        client.get("../../admin")
    assert calls == []
