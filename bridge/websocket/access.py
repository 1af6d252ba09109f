"""Who may use the WebSocket endpoint: the browser origin and the credentials of a request.

Checked on every HTTP request before anything else (the WebSocket opening handshake, ``/ui``,
``/readers``). Pure: takes header values and answers ``None`` (allowed) or a ``Refusal``.

Origins matter because a browser lets any web page open a WebSocket to ``127.0.0.1``: without
the check, a page the cashier happens to visit could drive the card reader (cross-site
WebSocket hijacking). Browsers always send ``Origin`` on a WebSocket handshake; clients that
are not browsers usually send none, and are let through to the credential check.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qs, urlsplit

REALM: Final = "magtek-bridge"
AuthMode = Literal["none", "token", "basic"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: an HTTP status, a metric label and a human detail."""

    status: int
    reason: str
    detail: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessPolicy:
    """The ``[websocket]`` access settings, secrets already read.

    Args:
        mode: ``none``, ``token`` (``Authorization: Bearer`` or ``?token=``) or ``basic``.
        token: the shared token (mode ``token``).
        username: the Basic user name (mode ``basic``).
        password: the Basic password (mode ``basic``).
        allowed_origins: browser origins allowed besides the bridge's own page; ``*`` = any.
        bind_address: the address we listen on (its own origin is trusted too).
        tls: whether we serve wss/https (the scheme of our own origin).
    """

    mode: AuthMode = "none"
    token: str | None = None
    username: str | None = None
    password: str | None = None
    allowed_origins: tuple[str, ...] = ()
    bind_address: str = "127.0.0.1"
    tls: bool = False

    def check(self, *, target: str, host: str | None, origin: str | None,
              authorization: str | None) -> Refusal | None:
        """Decide about one request.

        Args:
            target: the request target (path and query).
            host: the ``Host`` header.
            origin: the ``Origin`` header, if any.
            authorization: the ``Authorization`` header, if any.
        """
        if origin is not None and not self._origin_allowed(origin, host):
            return Refusal(403, "origin", f"origin {origin[:100]} is not allowed")
        if self.mode == "token":
            return self._check_token(target, authorization)
        if self.mode == "basic":
            return self._check_basic(authorization)
        return None

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        wanted = _normalise_origin(origin)
        allowed = {_normalise_origin(o) for o in self.allowed_origins}
        if "*" in allowed or wanted in allowed:
            return True
        # Our own page (/ui): same scheme and host:port as the request. Only for host names
        # that cannot be rebound to us by someone else's DNS (IP literals, localhost, the
        # configured address); other names must be listed in allowed_origins.
        if host is None:
            return False
        scheme = "https" if self.tls else "http"
        if wanted != f"{scheme}://{host.lower()}":
            return False
        name = urlsplit(f"//{host}").hostname or ""
        return name == "localhost" or name == self.bind_address.lower() or _is_ip(name)

    def _check_token(self, target: str, authorization: str | None) -> Refusal | None:
        assert self.token is not None
        offered: list[str] = parse_qs(urlsplit(target).query).get("token", [])
        if authorization and authorization[:7].lower() == "bearer ":
            offered.append(authorization[7:].strip())
        if any(_same(candidate, self.token) for candidate in offered):
            return None
        detail = "a token is required" if not offered else "wrong token"
        return Refusal(401, "auth", detail, (("WWW-Authenticate", f'Bearer realm="{REALM}"'),))

    def _check_basic(self, authorization: str | None) -> Refusal | None:
        assert self.username is not None and self.password is not None
        challenge = (("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),)
        if not authorization or authorization[:6].lower() != "basic ":
            return Refusal(401, "auth", "credentials are required", challenge)
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Refusal(401, "auth", "malformed Basic credentials", challenge)
        user, _, password = decoded.partition(":")
        # Both compared in full whatever the first gives: no timing hint which one was wrong.
        user_ok = _same(user, self.username)
        password_ok = _same(password, self.password)
        if user_ok and password_ok:
            return None
        return Refusal(401, "auth", "wrong user name or password", challenge)


def _same(offered: str, expected: str) -> bool:
    return hmac.compare_digest(offered.encode("utf-8"), expected.encode("utf-8"))


def _normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


__all__ = ["AccessPolicy", "AuthMode", "Refusal"]
