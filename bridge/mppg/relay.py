"""Status relay: a payment request's WebSocket, republished to MQTT.

MPPG pushes a TransactionSummary over the request's WebSocket for each transaction and
closes the socket once the request is paid (spec §6.6). Each relay runs on its own thread:
every summary goes to ``.../<id>/Transaction`` (in arrival order), then the request is read
back (GET) and its status goes to ``.../<id>/State`` (retained), because a summary alone
does not say whether the usage limit is reached.

A transaction made while no socket was open (a network blip, the bridge restarting) is
never pushed again; GET lists it. Every GET's transactions are compared with the ids already
published and the missing ones published from the GET (``"transactionResponse": null``,
``"recovered": true``). While a socket is open, a transaction the GET shows first gets
``FILL_IN_GRACE_S`` to arrive on the socket (with MPPG's response) before it is filled in.
Each transaction is published once, by ``transactionId``; the ids are kept in the
``RelayJournal`` so a restarted bridge neither loses nor repeats them.

MPPG's WebSocket URL must be ``wss://`` (it carries a bearer token); ``ws://`` is accepted
for loopback hosts only (the tests' fake service).

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
from urllib.parse import urlsplit

import structlog
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import ClientConnection, connect

from bridge import __version__
from bridge.backoff import Backoff
from bridge.mppg.definition import check_request_id
from bridge.mppg.errors import ErrorCode, MppgError
from bridge.mppg.journal import RelayJournal
from bridge.mppg.metrics import MppgMetrics
from bridge.mppg.models import (
    PaymentRequestDetail,
    PaymentRequestStatus,
    TransactionDetail,
    status_name,
)
from bridge.mppg.relay_wire import (
    expires_at,
    parse_summary,
    secure_socket_url,
    status_payload,
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
# While a socket is open, how long a transaction GET shows may take to arrive on it.
FILL_IN_GRACE_S: Final = 1.0

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


class StatusRelay:
    """One payment request's WebSocket, relayed on its own daemon thread.

    Args:
        detail: the request as last read; ``None`` when resuming (it is fetched first).
        request_id: needed when ``detail`` is ``None``.
        published: transaction ids already published (resuming); default: the ones
            ``detail`` lists (the requester has seen those in its reply).
        journal: where the relay and its published ids are recorded.
    """

    def __init__(self, detail: PaymentRequestDetail | None, *, client: DetailSource,
                 topics: PaymentTopics, publish: Publish, options: RelayOptions,
                 metrics: MppgMetrics | None = None,
                 on_exit: Callable[[StatusRelay], None] | None = None,
                 request_id: str | None = None, published: set[str] | None = None,
                 journal: RelayJournal | None = None) -> None:
        self.request_id = check_request_id(
            detail.payment_request_id if detail is not None else request_id)
        self.detail = detail
        if published is None:
            published = {t.transaction_id for t in (detail.transactions if detail else [])
                         if t.transaction_id}
        self._published = set(published)
        self._pending: dict[str, tuple[float, TransactionDetail]] = {}
        self._journal = journal
        self._gone = False  # MPPG says there is no such request
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
        self._log.info("mppg_relay_started", resumed=self.detail is None)
        if self._journal is not None:
            self._journal.add(self.request_id, self._published)
        try:
            self.ended = self._relay()
        except Exception:  # a bug here must end this relay only, never the bridge
            self.ended = "failed"
            self._log.exception("mppg_relay_failed")
        finally:
            if self._journal is not None and self.ended != "bridge stopping":
                self._journal.remove(self.request_id)  # done: nothing to resume
            if self._metrics is not None:
                self._metrics.relays_active.dec()
            self._log.info("mppg_relay_ended", reason=self.ended)
            if self._on_exit is not None:
                self._on_exit(self)

    # -- the loop ----------------------------------------------------------------------------

    def _relay(self) -> str:
        backoff = Backoff(self._options.reconnect_min_delay, self._options.reconnect_max_delay)
        while self.detail is None:  # resuming: MPPG's word first
            if self._fetch() is None and self._gone:
                return "unknown to mppg"
            if self.detail is None and self._stop.wait(backoff.next_delay()):
                return "bridge stopping"
        backoff.reset()
        detail = self._current()
        token = detail.websocket_token
        delay = 0.0
        while True:
            self._fill_in(detail, grace=0.0)
            self._publish_status(detail)
            if detail.status in FINAL:
                return status_name(detail.status).lower()
            if self._long_expired():
                return "past expiration"
            if token is not None:
                if not secure_socket_url(token):
                    # Not the URL: it carries the access token.
                    self._log.error("mppg_relay_insecure_url",
                                    scheme=urlsplit(token).scheme or "-")
                    return "refused: websocket url is not wss"
                stable = self._listen(token)
                token = None  # short-lived: the next connection uses a fresh one
                detail = self._current()
                self._flush_fill_ins(force=True)
                if detail.status in FINAL:
                    continue
                if stable:
                    backoff.reset()
                delay = 0.0 if stable else backoff.next_delay()
            if self._stop.wait(delay):
                return "bridge stopping"
            fresh = self._fetch()
            if fresh is None:
                if self._gone:
                    return "unknown to mppg"
                delay = backoff.next_delay()
                continue
            detail = fresh
            token = fresh.websocket_token
            delay = 0.0 if token is not None else backoff.next_delay()

    def _current(self) -> PaymentRequestDetail:
        assert self.detail is not None
        return self.detail

    def _fetch(self) -> PaymentRequestDetail | None:
        """GET the request (status + fresh token); ``None`` (logged) when MPPG fails."""
        try:
            fresh = self._client.get(self.request_id)
        except MppgError as exc:
            self._log.warning("mppg_relay_refresh_failed", code=exc.code, error=exc.message)
            self._gone = exc.code == ErrorCode.INVALID_PAYMENT_REQUEST_ID
            return None
        self.detail = fresh
        return fresh

    # -- transactions missed by the socket ----------------------------------------------------

    def _fill_in(self, detail: PaymentRequestDetail, *, grace: float) -> None:
        """Queue the transactions ``detail`` lists that were never published; publish the
        ones whose grace is over."""
        due = time.monotonic() + grace
        for tx in detail.transactions:
            tid = tx.transaction_id
            if tid and tid not in self._published and tid not in self._pending:
                self._pending[tid] = (due, tx)
        self._flush_fill_ins(force=False)

    def _flush_fill_ins(self, *, force: bool) -> int:
        """Publish the fill-ins that are due (all with ``force``); how many were."""
        now = time.monotonic()
        count = 0
        for tid, (due, tx) in list(self._pending.items()):
            if tid in self._published:
                del self._pending[tid]
            elif force or due <= now:
                del self._pending[tid]
                summary = {"transactionResponse": None, "detail": tx.to_wire(),
                           "recovered": True}
                self._publish_transaction(summary, tid)
                self._log.info("mppg_relay_transaction_recovered", transaction_id=tid,
                               approved=tx.approved)
                count += 1
                if self._metrics is not None:
                    self._metrics.transactions_recovered.inc()
        return count

    def _long_expired(self) -> bool:
        expires = expires_at(self._current())
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
            # Paid between the GET that brought this token and now: the socket will never
            # say so. One more GET closes that gap (what it shows gets its grace first: the
            # socket may already hold it, with MPPG's response).
            fresh = self._fetch()
            final = False
            if fresh is not None:
                self._fill_in(fresh, grace=FILL_IN_GRACE_S)
                final = fresh.status in FINAL
            self._receive(ws, final=final)
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

    def _receive(self, ws: ClientConnection, *, final: bool = False) -> None:
        """Read until the socket closes (``ConnectionClosed``), stop, or a final status.

        Messages already waiting are relayed before the status is read back, so a burst
        gives Transaction, Transaction, ..., Status. After a final status the socket is
        drained for a moment: MPPG closes it itself after a payment (§6.6), and a summary
        still in flight must not be lost.
        """
        self._delivered = 0
        drain_until: float | None = time.monotonic() + FINAL_DRAIN_S if final else None
        while not self._stop.is_set():
            if drain_until is not None and time.monotonic() > drain_until:
                return
            if drain_until is None and self._long_expired():
                return
            try:
                raw = ws.recv(timeout=self._options.poll_interval)
            except TimeoutError:
                if self._flush_fill_ins(force=False):
                    self._publish_status(self._current())
                continue
            self._relay_message(raw)
            while True:
                try:
                    self._relay_message(ws.recv(timeout=0))
                except TimeoutError:
                    break
            fresh = self._fetch()
            if fresh is not None:
                self._fill_in(fresh, grace=FILL_IN_GRACE_S)
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
        tid = detail.get("transactionId") if isinstance(detail, dict) else None
        self._delivered += 1
        if isinstance(tid, str) and tid in self._published:
            self._log.info("mppg_relay_transaction_repeated", transaction_id=tid)
            return
        self._publish_transaction(summary, tid if isinstance(tid, str) else None)
        self._log.info("mppg_relay_transaction", approved=detail.get("approved"),
                       transaction_id=tid)

    def _publish_transaction(self, summary: dict[str, Any], tid: str | None) -> None:
        self._publish(self._topics.transaction(self.request_id),
                      json.dumps(summary).encode(), False)
        if tid:
            self._published.add(tid)
            if self._journal is not None:
                self._journal.record(self.request_id, tid)
        if self._metrics is not None:
            self._metrics.transactions_relayed.inc()

    def _publish_status(self, detail: PaymentRequestDetail) -> None:
        payload = status_payload(detail)
        if payload != self._last_status:
            self._publish(self._topics.state(self.request_id), payload, True)
            self._last_status = payload


__all__ = [
    "FINAL",
    "DetailSource",
    "Publish",
    "RelayOptions",
    "StatusRelay",
    "parse_summary",
    "secure_socket_url",
    "status_payload",
]
