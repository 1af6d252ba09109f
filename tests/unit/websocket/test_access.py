"""Origin and credential checks of the WebSocket endpoint (pure: header values in, verdict out)."""

from __future__ import annotations

import base64

import pytest

from bridge.websocket import AccessPolicy

HOST = "127.0.0.1:8765"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _check(policy: AccessPolicy, *, target: str = "/", host: str | None = HOST,
           origin: str | None = None, authorization: str | None = None):
    return policy.check(target=target, host=host, origin=origin, authorization=authorization)


@pytest.mark.parametrize("origin", [None, "http://127.0.0.1:8765", "http://localhost:8765",
                                    "HTTP://127.0.0.1:8765/"])
def test_no_origin_and_own_origin_are_allowed(origin):
    host = "localhost:8765" if origin and "localhost" in origin else HOST
    assert _check(AccessPolicy(), origin=origin, host=host) is None


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("https://evil.example", HOST),
        ("https://127.0.0.1:8765", HOST),                    # wrong scheme for a plain listener
        ("http://127.0.0.1:9999", HOST),                     # another port: another origin
        ("http://rebound.example:8765", "rebound.example:8765"),  # DNS rebinding
        ("http://127.0.0.1:8765, https://evil.example", HOST),    # two Origin headers joined
        ("null", HOST),                                      # sandboxed frame, file://
        ("http://127.0.0.1:8765", None),
    ],
)
def test_foreign_origins_are_refused(origin, host):
    refusal = _check(AccessPolicy(), origin=origin, host=host)
    assert refusal is not None and (refusal.status, refusal.reason) == (403, "origin")


def test_allowed_origins_and_wildcard():
    listed = AccessPolicy(allowed_origins=("https://POS.example.com/",))
    assert _check(listed, origin="https://pos.example.com") is None
    assert _check(listed, origin="https://other.example.com") is not None
    assert _check(AccessPolicy(allowed_origins=("*",)), origin="https://any.example") is None


def test_configured_host_name_counts_as_own():
    policy = AccessPolicy(bind_address="pos-lane-1", tls=True)
    assert _check(policy, origin="https://pos-lane-1:8765", host="pos-lane-1:8765") is None
    assert _check(policy, origin="http://pos-lane-1:8765", host="pos-lane-1:8765") is not None


def test_token_from_header_or_query():
    policy = AccessPolicy(mode="token", token="t0ken")
    assert _check(policy, authorization="Bearer t0ken") is None
    assert _check(policy, authorization="bearer  t0ken ") is None
    assert _check(policy, target="/MagTek/Device/X/B1?token=t0ken") is None
    for target, authorization in (("/", None), ("/?token=nope", None), ("/", "Bearer nope"),
                                  ("/", "Basic dDBrZW4=")):
        refusal = _check(policy, target=target, authorization=authorization)
        assert refusal is not None and (refusal.status, refusal.reason) == (401, "auth")
        assert dict(refusal.headers)["WWW-Authenticate"].startswith("Bearer")


def test_origin_is_checked_before_credentials():
    policy = AccessPolicy(mode="token", token="t0ken")
    refusal = _check(policy, origin="https://evil.example", authorization="Bearer t0ken")
    assert refusal is not None and refusal.reason == "origin"


def test_basic_credentials():
    policy = AccessPolicy(mode="basic", username="pos", password="pa:ss")
    assert _check(policy, authorization=_basic("pos", "pa:ss")) is None
    for authorization in (None, _basic("pos", "wrong"), _basic("other", "pa:ss"),
                          "Basic !!!notbase64", "Bearer pa:ss",
                          "Basic " + base64.b64encode(b"\xff\xfe").decode()):
        refusal = _check(policy, authorization=authorization)
        assert refusal is not None and refusal.status == 401
        assert dict(refusal.headers)["WWW-Authenticate"].startswith("Basic")
