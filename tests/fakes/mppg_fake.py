"""A local MPPG Payment Request service: the four endpoints, Basic auth, the documented
error bodies, and a WebSocket that pushes TransactionSummary messages when a test says so.

It answers in the shapes the spec shows, not the ones a client would like: create returns
``paymentLink``/``websocketToken`` null and ``transactions`` null (§3.4); ``customerTranRef``
comes back as an integer when it is one (§7.4 types it Integer); list rows' times have no
zone (§2.4); transaction dates have none either (§5.4); a value of the wrong JSON type gets
ASP.NET's validation body without ``code``; an unknown id gets 404 and an unsupported method
405, both with an empty body; 401 has no body.

Everything listens on 127.0.0.1, on free ports. Switches: ``server_error`` (500/50000),
``forbidden`` (403/40300), ``not_set_up`` (500/50001), ``links_on_create`` (True: create
returns links after all), ``list_as_array`` (list answers a bare array of rows, as the
spec's §2.4 example), ``ws_refuse`` (WebSocket handshakes get 503: the relay cannot
connect), ``delay`` (seconds every HTTP answer waits), ``create_failure`` (``"garbage"``:
create stores the request but answers 200 with a body that is not JSON; ``"slow"``: it stores
it and answers only after ``slow_seconds``). ``pay()`` plays the hosted payment page: it records a
transaction, counts it when approved, pushes the summary to every listener and, once the
usage limit is reached (status Paid), closes the sockets as the spec says the service does
(§6.6).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from tests.fakes.mppg_rules import BindingError, RefusalError, check_definition, check_list_query

MOUNT = "/PaymentRequest"
API = f"{MOUNT}/api/PaymentRequest"
MERCHANT_ID = 20
DEFAULTS = {"processorName": "FAKE PROCESSOR", "termsAndTransactionInfo": "Fake terms",
            "promptForTax": False, "promptForTips": False}
# Put in every transactionResponse, so a test can prove it never reaches a log.
CARD_SENTINEL = "PAN=4111XXXXXXXX1111;TRACK2=SENTINEL-CARD-DATA"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _naive(value: datetime) -> str:
    """A time as MPPG writes list rows and transaction dates: UTC, no zone."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def _ref(value: Any) -> Any:
    """customerTranRef as §7.4 types it (Integer) when it is a number, else as stored."""
    if isinstance(value, str) and value.isdigit() and len(value) < 10:
        return int(value)
    return value


_GUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return _iso(value)
    raise TypeError(type(value).__name__)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, default=_json_default).encode()


@dataclass
class FakeRequest:
    """One stored payment request."""

    id: str
    definition: dict[str, Any]
    created: datetime
    usage: int = 0
    transactions: list[dict[str, Any]] = field(default_factory=list)

    def status(self, now: datetime) -> int:
        d = self.definition
        if not d["isEnabled"]:
            return 0
        if d["usageCountLimit"] > 0 and self.usage >= d["usageCountLimit"]:
            return 4
        if d["activationDate"] > now:
            return 1
        if d["expirationDate"] < now:
            return 3
        return 2


class FakeMppg:
    """The fake service. Use as a context manager, or ``start()``/``stop()``.

    Args:
        username, password: the only credentials it accepts.
        token_ttl: seconds a WebSocket token stays valid (MPPG's are JWTs of about 60 s).
        http_port, ws_port: 0 picks free ports; ``restart()`` keeps the ones it had.
    """

    def __init__(self, username: str = "merchant", password: str = "s3cret-pw", *,
                 token_ttl: float = 60.0, http_port: int = 0, ws_port: int = 0) -> None:
        self.username = username
        self.password = password
        self.token_ttl = token_ttl
        self.server_error = False
        self.forbidden = False
        self.not_set_up = False
        self.links_on_create = False
        self.list_as_array = False
        self.ws_refuse = False
        self.delay = 0.0
        self.create_failure: str | None = None
        self.slow_seconds = 5.0
        self.create_stores = True  # False: a failing create stores nothing after all
        # Set to a cleared Event to hold every HTTP answer until it is set (``in_flight``
        # counts the calls waiting there).
        self.gate: threading.Event | None = None
        self.in_flight = 0
        self.http_port = http_port
        self.ws_port = ws_port
        self.calls: list[tuple[str, str]] = []
        self.requests: dict[str, FakeRequest] = {}
        self._lock = threading.Condition()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._listeners: dict[str, list[ServerConnection]] = {}
        self._ws_connects: dict[str, int] = {}
        self._http: ThreadingHTTPServer | None = None
        self._ws: Server | None = None
        self._threads: list[threading.Thread] = []
        self.connections: set[socket.socket] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}{MOUNT}"

    def start(self) -> FakeMppg:
        self._http = ThreadingHTTPServer(("127.0.0.1", self.http_port), _handler_for(self))
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        self._ws = serve(self._ws_session, "127.0.0.1", self.ws_port,
                         process_request=self._ws_check, ping_interval=None)
        self.ws_port = self._ws.socket.getsockname()[1]
        self._threads = [
            # A short poll keeps stop() (shutdown() waits for one poll) quick.
            threading.Thread(target=self._http.serve_forever, args=(0.05,),
                             name="fake-mppg-http", daemon=True),
            threading.Thread(target=self._ws.serve_forever, name="fake-mppg-ws", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every WebSocket (the service going down)."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        with self._lock:
            open_connections = list(self.connections)
        for conn in open_connections:  # kept-alive client connections must die too
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._ws is not None:
            self._ws.shutdown()
            self._ws = None
        with self._lock:
            sockets = [ws for group in self._listeners.values() for ws in group]
        for ws in sockets:
            with contextlib.suppress(ConnectionClosed):
                ws.close()
        for thread in self._threads:
            thread.join(5)
        self._threads = []

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> FakeMppg:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls -----------------------------------------------------------------------

    def seed(self, amount: str = "1.00", *, created: datetime | None = None,
             **fields: Any) -> str:
        """Store a request directly (as if created on ``created``); returns its id."""
        now = datetime.now(UTC)
        body = {"amount": Decimal(amount), **fields}
        definition = check_definition(body, DEFAULTS, now)
        request = FakeRequest(str(uuid.uuid4()), definition, created or now)
        with self._lock:
            self.requests[request.id] = request
        return request.id

    def pay(self, request_id: str, *, approved: bool = True,
            authorized_amount: str | None = None) -> dict[str, Any]:
        """A customer pays on the hosted page: returns the TransactionSummary it pushed."""
        with self._lock:
            request = self.requests[request_id]
            if request.status(datetime.now(UTC)) != 2:
                raise AssertionError(f"request {request_id} is not Active")
            amount = authorized_amount or str(request.definition["amount"])
            detail = {"paymentRequestId": request_id, "transactionId": str(uuid.uuid4()),
                      "transactionDate": _naive(datetime.now(UTC)),
                      "authorizedAmount": float(Decimal(amount)) if approved else None,
                      "approved": approved}
            request.transactions.append(detail)
            if approved:
                request.usage += 1
            paid = request.status(datetime.now(UTC)) == 4
            listeners = list(self._listeners.get(request_id, []))
        summary = {"transactionResponse": json.dumps(
            {"approved": approved, "processorResponse": CARD_SENTINEL}), "detail": detail}
        for ws in listeners:
            with contextlib.suppress(ConnectionClosed):  # a listener that just went away
                ws.send(json.dumps(summary))
                if paid:
                    ws.close()
        return summary

    def drop_sockets(self, request_id: str) -> None:
        """Close the request's WebSockets without it being paid (a network blip)."""
        with self._lock:
            # Forgotten at once, so wait_listeners() counts only the reconnected ones.
            sockets = self._listeners.pop(request_id, [])
        for ws in sockets:
            with contextlib.suppress(ConnectionClosed):
                ws.close(code=1011, reason="fake drop")

    def wait_listeners(self, request_id: str, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``count`` WebSockets listen to the request."""
        with self._lock:
            return self._lock.wait_for(
                lambda: len(self._listeners.get(request_id, [])) >= count, timeout)

    def wait_no_listeners(self, request_id: str, timeout: float = 5.0) -> bool:
        """Wait until no WebSocket listens to the request any more."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._listeners.get(request_id), timeout)

    def wait_connects(self, request_id: str, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``count`` WebSocket connections were opened for the request in all."""
        with self._lock:
            return self._lock.wait_for(
                lambda: self._ws_connects.get(request_id, 0) >= count, timeout)

    def wait_in_flight(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``count`` HTTP calls are held at the gate at once."""
        with self._lock:
            return self._lock.wait_for(lambda: self.in_flight >= count, timeout)

    def listeners(self, request_id: str) -> int:
        with self._lock:
            return len(self._listeners.get(request_id, []))

    def ws_connects(self, request_id: str) -> int:
        """How many WebSocket connections were ever opened for the request."""
        with self._lock:
            return self._ws_connects.get(request_id, 0)

    def status_of(self, request_id: str) -> int:
        with self._lock:
            return self.requests[request_id].status(datetime.now(UTC))

    # -- the WebSocket -----------------------------------------------------------------------

    def _issue_token(self, request_id: str) -> str:
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._tokens[token] = (request_id, time.monotonic() + self.token_ttl)
        return (f"ws://127.0.0.1:{self.ws_port}/client/hubs/MagensaPaymentRequest"
                f"?access_token={token}")

    def _token_owner(self, path: str) -> str | None:
        token = parse_qs(urlsplit(path).query).get("access_token", [""])[0]
        with self._lock:
            owner, expires = self._tokens.get(token, ("", 0.0))
        return owner if owner and time.monotonic() < expires else None

    def _ws_check(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.ws_refuse:
            return Response(503, "Service Unavailable", Headers(), b"push service down")
        if self._token_owner(request.path) is None:
            return Response(401, "Unauthorized", Headers(), b"invalid or expired token")
        return None

    def _ws_session(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        owner = self._token_owner(ws.request.path)
        if owner is None:  # expired between the handshake check and here
            ws.close(code=4401)
            return
        with self._lock:
            self._listeners.setdefault(owner, []).append(ws)
            self._ws_connects[owner] = self._ws_connects.get(owner, 0) + 1
            self._lock.notify_all()
        try:
            for _ in ws:  # the service never expects anything from the merchant
                pass
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                group = self._listeners.get(owner, [])
                if ws in group:
                    group.remove(ws)
                self._lock.notify_all()

    # -- the HTTP API ------------------------------------------------------------------------

    def _detail(self, request: FakeRequest, *, links: bool = True,
                created: bool = False) -> dict[str, Any]:
        now = datetime.now(UTC)
        definition = {**request.definition, "currentUsageCount": request.usage,
                      "dateCreated": request.created}
        definition["customerTranRef"] = _ref(definition["customerTranRef"])
        return {
            "magTranID": str(uuid.uuid4()),
            "paymentRequestID": request.id,
            "paymentRequestMerchantID": MERCHANT_ID,
            "paymentLink": (f"http://127.0.0.1:{self.http_port}/mppgtouchless/mppg?token="
                            f"{request.id}&src=1") if links else None,
            "websocketToken": self._issue_token(request.id) if links else None,
            "definition": definition,
            "status": request.status(now),
            # .NET writes a list it never filled as null: create has no transactions yet.
            "transactions": None if created else list(request.transactions),
        }

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes | None,
               authorization: str | None) -> tuple[int, Any]:
        """One API call -> (HTTP status, JSON body or None)."""
        with self._lock:
            self.calls.append((method, path))
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if self.delay:
            time.sleep(self.delay)
        gate = self.gate
        if gate is not None:
            with self._lock:
                self.in_flight += 1
                self._lock.notify_all()
            try:
                gate.wait(30)
            finally:
                with self._lock:
                    self.in_flight -= 1
        if authorization != f"Basic {expected}":
            return 401, None
        request_id = path[len(API) + 1:] if path.startswith(f"{API}/") else None
        if path != API and request_id is None:
            return 404, None
        if (method not in ("GET", "POST") if request_id is None
                else method not in ("GET", "PUT")):
            return 405, None
        if self.forbidden:
            return 403, self._error(40300, "Authorization Error", request_id)
        if self.not_set_up:
            return 500, self._error(50001, "Target user is not setup for MPPG", request_id)
        if self.server_error:
            return 500, self._error(50000, "Internal Server Error", request_id)
        try:
            if request_id is None:
                return 200, self._list(query) if method == "GET" else self._create(body)
            if not _GUID.match(request_id):
                raise RefusalError(40018, "Invalid Payment Request ID")
            with self._lock:
                if request_id not in self.requests:
                    return 404, None
            if method == "GET":
                return 200, self._get(request_id)
            return 200, self._update(request_id, body)
        except BindingError as failed:
            return 400, {"type": "https://tools.ietf.org/html/rfc7231#section-6.5.1",
                         "title": "One or more validation errors occurred.", "status": 400,
                         "traceId": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00",
                         "errors": failed.errors}
        except RefusalError as refusal:
            # PUT answers PaymentRequestError (with the id); the others PaymentRequestListError.
            return 400, self._error(refusal.code, refusal.message,
                                    request_id if method == "PUT" else None)

    @staticmethod
    def _error(code: int, message: str, request_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"magTranID": str(uuid.uuid4()), "code": code,
                                "message": message}
        if request_id is not None:
            body["paymentRequestID"] = request_id
        return body

    @staticmethod
    def _body(raw: bytes | None) -> Any:
        try:
            return json.loads(raw or b"", parse_float=Decimal)
        except ValueError:
            raise BindingError("$", "'n' is an invalid start of a value. Path: $") from None

    def _list(self, query: dict[str, str]) -> Any:
        now = datetime.now(UTC)
        ds, de, ps, pn, st = check_list_query(query, now.date())
        with self._lock:
            rows = [r for r in self.requests.values()
                    if ds <= r.created.date() <= de and (st is None or r.status(now) == st)]
            rows.sort(key=lambda r: r.created)
            if rows and pn > math.ceil(len(rows) / ps):
                raise RefusalError(40015, "Invalid Page Number")
            page = [self._summary(r, now) for r in rows[(pn - 1) * ps:pn * ps]]
            if self.list_as_array:
                return page
            return {"magTranID": str(uuid.uuid4()), "totalRecordsAvailable": len(rows),
                    "requests": page}

    @staticmethod
    def _summary(r: FakeRequest, now: datetime) -> dict[str, Any]:
        d = r.definition
        return {"paymentRequestID": r.id, "transactionType": 1,
                "customerTranID": d["customerTranID"], "customerTranRef": d["customerTranRef"],
                "amount": d["amount"], "usageCountLimit": d["usageCountLimit"],
                "currentUsageCount": r.usage, "isEnabled": d["isEnabled"],
                "dateCreated": r.created, "activationDate": _naive(d["activationDate"]),
                "expirationDate": _naive(d["expirationDate"]), "status": r.status(now)}

    def _create(self, raw: bytes | None) -> Any:
        now = datetime.now(UTC)
        definition = check_definition(self._body(raw), DEFAULTS, now)
        request = FakeRequest(str(uuid.uuid4()), definition, now)
        with self._lock:
            failure = self.create_failure
            if self.create_stores or failure is None:
                self.requests[request.id] = request
            detail = self._detail(request, links=self.links_on_create, created=True)
        if failure == "garbage":
            return _Raw(b"<html>upstream proxy error</html>")
        if failure == "slow":
            time.sleep(self.slow_seconds)
        return detail

    def _lookup(self, request_id: str) -> FakeRequest:
        return self.requests[request_id]

    def _get(self, request_id: str) -> dict[str, Any]:
        with self._lock:
            return self._detail(self._lookup(request_id))

    def _update(self, request_id: str, raw: bytes | None) -> dict[str, Any]:
        with self._lock:
            request = self._lookup(request_id)
            request.definition = check_definition(self._body(raw), DEFAULTS,
                                                  datetime.now(UTC))
            return self._detail(request)


def _handler_for(fake: FakeMppg) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without this each answer waits ~40 ms
            # for the client's delayed ACK.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with fake._lock:
                fake.connections.add(self.connection)

        def finish(self) -> None:
            with fake._lock:
                fake.connections.discard(self.connection)
            super().finish()

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            status, payload = fake.handle(self.command, parts.path, query, body,
                                          self.headers.get("Authorization"))
            if isinstance(payload, _Raw):
                data = payload.data
            else:
                data = _dumps(payload) if payload is not None else b""
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="MPPG"')
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            # A client that gave up (its timeout) is gone: nothing to tell it.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.end_headers()
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest shows failures, not access logs

    return Handler


@dataclass(frozen=True)
class _Raw:
    """A body sent as it is (not JSON)."""

    data: bytes


@contextmanager
def running_fake(**options: Any) -> Iterator[FakeMppg]:
    fake = FakeMppg(**options)
    with fake:
        yield fake


__all__ = ["CARD_SENTINEL", "FakeMppg", "FakeRequest", "running_fake"]
