"""Status relay: a payment request's WebSocket, republished to MQTT.

MPPG pushes a TransactionSummary over the request's WebSocket for each transaction and
closes the socket once the request is paid (spec §6.6). Each relay runs on its own thread:
every summary goes to ``.../<id>/Transaction`` (in arrival order), then the request is read
back (GET) and its status goes to ``.../<id>/Status`` (retained), because a summary alone
does not say whether the usage limit is reached.

A WebSocket token is a short-lived bearer URL (MPPG's are JWTs of about a minute), so every
reconnect first fetches the request again, which also brings the current status. A relay
ends when the status is final (Paid, Expired, Disabled), when the request is long past its
expiration date, or when the bridge stops. Tokens and transaction responses (which may hold
masked card data) are never logged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import structlog
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import ClientConnection, connect

from bridge import __version__
from bridge.backoff import Backoff
from bridge.mppg.definition import check_request_id
from bridge.mppg.errors import MppgError
from bridge.mppg.metrics import MppgMetrics
from bridge.mppg.models import (
    PaymentRequestDetail,
    PaymentRequestStatus,
    TransactionSummary,
    status_name,
)
from bridge.mppg.topics import PaymentTopics

_log = structlog.get_logger("bridge.mppg.relay")

FINAL: Final = frozenset({PaymentRequestStatus.PAID, PaymentRequestStatus.EXPIRED,
                          PaymentRequestStatus.DISABLED})
# A connection that lasted this long (or delivered anything) was not a failed attempt.
STABLE_AFTER_S: Final = 5.0
MAX_MESSAGE_BYTES: Final = 256 * 1024
# After a final status, how long to wait for the service to close the socket.
FINAL_DRAIN_S: Final = 2.0

Publish = Callable[[str, bytes, bool], None]
"""``publish(topic, payload, retain)`` at QoS 1; must be thread-safe."""


class DetailSource(Protocol):
    """What a relay needs from the HTTP client."""

    def get(self, request_id: str) -> PaymentRequestDetail: ...


@dataclass(frozen=True, slots=True)
class RelayOptions:
    connect_timeout: float = 5.0
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 30.0
    poll_interval: float = 0.5       # how often a quiet socket checks for stop and expiry
    expiry_grace: float = 300.0      # keep listening this long past the expiration date


def status_payload(detail: PaymentRequestDetail) -> bytes:
    """The retained ``Status`` message: MPPG's status, its name and the usage counts."""
    definition = detail.definition
    return json.dumps({
        "paymentRequestID": detail.payment_request_id,
        "status": detail.status,
        "statusName": status_name(detail.status),
        "currentUsageCount": definition.current_usage_count if definition else None,
        "usageCountLimit": definition.usage_count_limit if definition else None,
    }).encode()


def parse_summary(raw: str | bytes) -> dict[str, Any] | None:
    """A TransactionSummary as received, or ``None`` if it is not one.

    Some push services wrap a JSON message in a JSON string, so one level of string is
    unwrapped. The original object is kept (not a re-serialized model) so the relay passes
    on every field MPPG sent, including ones this version does not know.
    """
    try:
        data = json.loads(raw)
        if isinstance(data, str):
            data = json.loads(data)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        TransactionSummary.model_validate(data)
    except ValidationError:
        return None
    return data


def _expires_at(detail: PaymentRequestDetail) -> datetime | None:
    when = detail.definition.expiration_date if detail.definition else None
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # MPPG's naive times are UTC


class StatusRelay:
    """One payment request's WebSocket, relayed on its own daemon thread."""

    def __init__(self, detail: PaymentRequestDetail, *, client: DetailSource,
                 topics: PaymentTopics, publish: Publish, options: RelayOptions,
                 metrics: MppgMetrics | None = None,
                 on_exit: Callable[[StatusRelay], None] | None = None) -> None:
        self.request_id = check_request_id(detail.payment_request_id)
        self.detail = detail
        self.ended: str | None = None
        self._client = client
        self._topics = topics
        self._publish = publish
        self._options = options
        self._metrics = metrics
        self._on_exit = on_exit
        self._stop = threading.Event()
        self._ws_lock = threading.Lock()
        self._ws: ClientConnection | None = None
        self._last_status: bytes | None = None
        self._delivered = 0
        self._log = _log.bind(payment_request=self.request_id)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"mppg-relay-{self.request_id[:8]}")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the relay to end; closes its socket so a waiting ``recv`` returns at once."""
        self._stop.set()
        with self._ws_lock:
            ws = self._ws
        if ws is not None:
            ws.close()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        if self._metrics is not None:
            self._metrics.relays_active.inc()
        self._log.info("mppg_relay_started")
        try:
            self.ended = self._relay()
        except Exception:  # a bug here must end this relay only, never the bridge
            self.ended = "failed"
            self._log.exception("mppg_relay_failed")
        finally:
            if self._metrics is not None:
                self._metrics.relays_active.dec()
            self._log.info("mppg_relay_ended", reason=self.ended)
            if self._on_exit is not None:
                self._on_exit(self)

    # -- the loop ----------------------------------------------------------------------------

    def _relay(self) -> str:
        backoff = Backoff(self._options.reconnect_min_delay, self._options.reconnect_max_delay)
        token = self.detail.websocket_token
        delay = 0.0
        while True:
            self._publish_status(self.detail)
            if self.detail.status in FINAL:
                return status_name(self.detail.status).lower()
            if self._long_expired():
                return "past expiration"
            if token is not None:
                stable = self._listen(token)
                token = None  # short-lived: the next connection uses a fresh one
                if self.detail.status in FINAL:
                    continue
                if stable:
                    backoff.reset()
                delay = 0.0 if stable else backoff.next_delay()
            if self._stop.wait(delay):
                return "bridge stopping"
            fresh = self._fetch()
            if fresh is None or fresh.websocket_token is None:
                delay = backoff.next_delay()
                continue
            token = fresh.websocket_token
            delay = 0.0

    def _fetch(self) -> PaymentRequestDetail | None:
        """GET the request (status + fresh token); ``None`` (logged) when MPPG fails."""
        try:
            fresh = self._client.get(self.request_id)
        except MppgError as exc:
            self._log.warning("mppg_relay_refresh_failed", code=exc.code, error=exc.message)
            return None
        self.detail = fresh
        return fresh

    def _long_expired(self) -> bool:
        expires = _expires_at(self.detail)
        grace = timedelta(seconds=self._options.expiry_grace)
        return expires is not None and datetime.now(UTC) > expires + grace

    def _listen(self, token: str) -> bool:
        """Relay one WebSocket connection until it closes; was it a stable one?"""
        if self._metrics is not None:
            self._metrics.relay_connects.inc()
        try:
            ws = connect(token, open_timeout=self._options.connect_timeout, close_timeout=2,
                         max_size=MAX_MESSAGE_BYTES,
                         user_agent_header=f"magtek-bridge/{__version__}")
        except (OSError, TimeoutError, WebSocketException) as exc:
            # Not the URL: it carries the access token.
            self._log.warning("mppg_relay_connect_failed", error=type(exc).__name__)
            return False
        with self._ws_lock:
            self._ws = ws
        started = time.monotonic()
        delivered = False
        try:
            self._receive(ws)
            delivered = self._delivered > 0
        except ConnectionClosed as closed:
            delivered = self._delivered > 0
            self._log.info("mppg_relay_socket_closed",
                           code=closed.rcvd.code if closed.rcvd else None)
        finally:
            with self._ws_lock:
                self._ws = None
            ws.close()
        return delivered or time.monotonic() - started >= STABLE_AFTER_S

    def _receive(self, ws: ClientConnection) -> None:
        """Read until the socket closes (``ConnectionClosed``), stop, or a final status.

        Messages already waiting are relayed before the status is read back, so a burst
        gives Transaction, Transaction, ..., Status. After a final status the socket is
        drained for a moment: MPPG closes it itself after a payment (§6.6), and a summary
        still in flight must not be lost.
        """
        self._delivered = 0
        drain_until: float | None = None
        while not self._stop.is_set():
            if drain_until is not None and time.monotonic() > drain_until:
                return
            if drain_until is None and self._long_expired():
                return
            try:
                raw = ws.recv(timeout=self._options.poll_interval)
            except TimeoutError:
                continue
            self._relay_message(raw)
            while True:
                try:
                    self._relay_message(ws.recv(timeout=0))
                except TimeoutError:
                    break
            fresh = self._fetch()
            if fresh is not None:
                self._publish_status(fresh)
                if fresh.status in FINAL and drain_until is None:
                    drain_until = time.monotonic() + FINAL_DRAIN_S

    def _relay_message(self, raw: str | bytes) -> None:
        """Publish one summary to ``.../Transaction`` (logging ids only)."""
        summary = parse_summary(raw)
        if summary is None:
            self._log.warning("mppg_relay_unreadable_message", length=len(raw))
            return
        detail = summary.get("detail") or {}
        self._publish(self._topics.transaction(self.request_id),
                      json.dumps(summary).encode(), False)
        self._delivered += 1
        if self._metrics is not None:
            self._metrics.transactions_relayed.inc()
        self._log.info("mppg_relay_transaction", approved=detail.get("approved"),
                       transaction_id=detail.get("transactionId"))

    def _publish_status(self, detail: PaymentRequestDetail) -> None:
        payload = status_payload(detail)
        if payload != self._last_status:
            self._publish(self._topics.status(self.request_id), payload, True)
            self._last_status = payload


__all__ = [
    "FINAL",
    "DetailSource",
    "Publish",
    "RelayOptions",
    "StatusRelay",
    "parse_summary",
    "status_payload",
]
