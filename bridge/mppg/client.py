"""The four Payment Request endpoints (spec §2-§5) over httpx, with HTTP Basic auth.

Every failure becomes an ``MppgError``: MPPG's error bodies keep their documented code; a
body without one (401 has none by design, ASP.NET's own 400 validation body has no ``code``,
404 and 405 come empty) gets the code its HTTP status means; a service that cannot be
reached, times out or answers 200 with something unreadable gets a ``BridgeCode``. Request
and response bodies are never logged: they carry payment links, bearer WebSocket URLs and, in
transaction responses, masked card data.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import ValidationError

from bridge import __version__
from bridge.errors import ConfigError
from bridge.mppg.definition import ListQuery, PaymentRequestDefinition, check_request_id
from bridge.mppg.errors import (
    BridgeCode,
    ErrorCode,
    MppgError,
    MppgProtocolError,
    MppgUnavailableError,
    error_for,
)
from bridge.mppg.models import (
    ErrorBody,
    PaymentRequestDetail,
    PaymentRequestSummaryListInfo,
    Wire,
)

if TYPE_CHECKING:
    from bridge.config import MppgSettings

_log = structlog.get_logger("bridge.mppg")

API_PATH: Final = "/api/PaymentRequest"
_W = TypeVar("_W", bound=Wire)


class MppgClient:
    """A connection pool to one MPPG Payment Request service; safe to share between threads.

    Args:
        base_url: up to and without ``/api``, e.g. ``https://devapp.magensa.dev/PaymentRequest``.
        username, password: the merchant's MPPG credentials (HTTP Basic).
        connect_timeout: seconds to open a connection.
        request_timeout: seconds for each of write, read and waiting for a pooled connection.
        transport: injected by tests (``httpx.MockTransport``); normally the network.
    """

    def __init__(self, base_url: str, username: str, password: str, *,
                 connect_timeout: float = 5.0, request_timeout: float = 15.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._host = urlsplit(self.base_url).netloc
        self._timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=httpx.BasicAuth(username, password),
            timeout=httpx.Timeout(request_timeout, connect=connect_timeout),
            headers={"Accept": "application/json",
                     "User-Agent": f"magtek-bridge/{__version__}"},
            transport=transport,
            follow_redirects=False,  # a redirect would resend the Basic credentials elsewhere
        )

    @classmethod
    def from_settings(cls, settings: MppgSettings) -> MppgClient:
        """Build from the ``[mppg]`` section; raises ``ConfigError`` naming what is missing."""
        if settings.base_url is None:
            raise ConfigError("mppg.base_url: not set")
        username = settings.username_value()
        password = settings.password_value()
        if username is None or password is None:
            raise ConfigError("mppg.username and mppg.password (or their _file keys): not set")
        return cls(settings.base_url, username, password,
                   connect_timeout=settings.connect_timeout,
                   request_timeout=settings.request_timeout)

    # -- the four endpoints ------------------------------------------------------------------

    # ``timeout`` (seconds) caps one call below ``request_timeout``: what an operation's
    # deadline leaves.

    def list_requests(self, query: ListQuery | None = None, *, timeout: float | None = None
                      ) -> PaymentRequestSummaryListInfo:
        """GET /api/PaymentRequest: one page of summaries and the total (§2)."""
        params = query.to_params() if query is not None else {}
        body = self._send("list", "GET", API_PATH, params=params, timeout=timeout)
        return self._parse(PaymentRequestSummaryListInfo, body)

    def create(self, definition: PaymentRequestDefinition, *, timeout: float | None = None
               ) -> PaymentRequestDetail:
        """POST /api/PaymentRequest: a new payment request (§3)."""
        body = self._send("create", "POST", API_PATH, json=definition.to_wire(),
                          timeout=timeout)
        return self._parse(PaymentRequestDetail, body)

    def get(self, request_id: str, *, timeout: float | None = None) -> PaymentRequestDetail:
        """GET /api/PaymentRequest/{id}: the detail, with a fresh WebSocket token (§4)."""
        path = f"{API_PATH}/{check_request_id(request_id)}"
        return self._parse(PaymentRequestDetail, self._send("get", "GET", path,
                                                            request_id=request_id,
                                                            timeout=timeout))

    def update(self, request_id: str, definition: PaymentRequestDefinition, *,
               timeout: float | None = None) -> PaymentRequestDetail:
        """PUT /api/PaymentRequest/{id}: replace the definition (§5)."""
        path = f"{API_PATH}/{check_request_id(request_id)}"
        body = self._send("update", "PUT", path, json=definition.to_wire(),
                          request_id=request_id, timeout=timeout)
        return self._parse(PaymentRequestDetail, body)

    # -- plumbing -----------------------------------------------------------------------------

    def _send(self, op: str, method: str, path: str, *, params: dict[str, str] | None = None,
              json: dict[str, Any] | None = None, request_id: str | None = None,
              timeout: float | None = None) -> Any:
        started = time.monotonic()
        limit = self._timeout if timeout is None else max(0.001, min(timeout, self._timeout))
        try:
            response = self._http.request(
                method, path, params=params, json=json,
                timeout=httpx.Timeout(limit, connect=min(limit, self._connect_timeout)))
        except httpx.TimeoutException:
            raise MppgUnavailableError(
                BridgeCode.TIMEOUT, f"MPPG at {self._host} did not answer within "
                f"{limit:g} s", payment_request_id=request_id) from None
        except httpx.HTTPError as exc:
            raise MppgUnavailableError(
                BridgeCode.UNAVAILABLE, f"cannot reach MPPG at {self._host}: "
                f"{type(exc).__name__}", payment_request_id=request_id) from None
        _log.debug("mppg_http", op=op, status=response.status_code,
                   ms=round((time.monotonic() - started) * 1000, 1))
        if response.status_code == 200:
            try:
                return response.json()
            except ValueError:
                raise MppgProtocolError(BridgeCode.BAD_GATEWAY,
                                        "MPPG answered 200 with a body that is not JSON",
                                        http_status=200) from None
        raise _error_from(response, request_id)

    @staticmethod
    def _parse(model: type[_W], body: Any) -> _W:
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            where = {".".join(str(p) for p in e["loc"]) for e in exc.errors()}
            raise MppgProtocolError(
                BridgeCode.BAD_GATEWAY,
                f"MPPG answered an unexpected {model.__name__} (fields: "
                f"{', '.join(sorted(where)) or '-'})", http_status=200) from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MppgClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# Codes for statuses whose body has no ``code``: 401 has no body by design (§2.4), ASP.NET
# answers a body it cannot bind with its own validation object, 404/405 come empty.
_STATUS_CODES: Final = {400: ErrorCode.INPUT_FORMAT, 401: ErrorCode.AUTHENTICATION,
                        403: ErrorCode.AUTHORIZATION}


def _error_from(response: httpx.Response, request_id: str | None) -> MppgError:
    status = response.status_code
    data: Any = None
    if status != 401 and response.content:
        try:
            data = response.json()
        except ValueError:
            data = None
    body: ErrorBody | None = None
    if isinstance(data, dict):
        try:
            body = ErrorBody.model_validate(data)
        except ValidationError:
            body = None
    if body is not None:
        return error_for(body.code, body.message or "", http_status=status,
                         mag_tran_id=body.mag_tran_id,
                         payment_request_id=body.payment_request_id or request_id)
    if status == 404 and request_id is not None:
        return error_for(ErrorCode.INVALID_PAYMENT_REQUEST_ID,
                         "no payment request with this id", http_status=status,
                         payment_request_id=request_id)
    code = _STATUS_CODES.get(status)
    if code is None and status >= 500:
        code = ErrorCode.INTERNAL
    if code is None and status in (404, 405):
        return MppgProtocolError(
            BridgeCode.BAD_GATEWAY, f"MPPG answered HTTP {status} for the API path: check "
            "mppg.base_url (the part before /api)", http_status=status,
            payment_request_id=request_id)
    if code is None and 400 <= status < 500:
        code = ErrorCode.INPUT_FORMAT
    if code is not None:
        return error_for(code, _validation_summary(data), http_status=status,
                         payment_request_id=request_id)
    return MppgProtocolError(BridgeCode.BAD_GATEWAY,
                             f"MPPG answered HTTP {status} without an error body",
                             http_status=status, payment_request_id=request_id)


def _validation_summary(data: Any) -> str:
    """ASP.NET's validation body in one line: its title and the fields it names."""
    if not isinstance(data, dict):
        return ""
    title = data.get("title") if isinstance(data.get("title"), str) else ""
    errors = data.get("errors")
    fields = [str(k).removeprefix("$.") for k in errors] if isinstance(errors, dict) else []
    text = title or ""
    if fields:
        text = f"{text} (fields: {', '.join(sorted(fields)[:10])})".strip()
    return text[:300]


__all__ = ["API_PATH", "MppgClient"]
