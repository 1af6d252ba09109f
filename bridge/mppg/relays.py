"""At most ``max_relays`` status relays at once, one per payment request."""

from __future__ import annotations

import threading
import time

from bridge.mppg.definition import check_request_id
from bridge.mppg.errors import MppgError
from bridge.mppg.journal import RelayJournal
from bridge.mppg.metrics import MppgMetrics
from bridge.mppg.models import PaymentRequestDetail
from bridge.mppg.relay import (
    FINAL,
    DetailSource,
    Publish,
    RelayOptions,
    StatusRelay,
    secure_socket_url,
    status_payload,
)
from bridge.mppg.topics import PaymentTopics


class RelayManager:
    """Starts relays, at most ``max_relays`` at once and one per payment request."""

    def __init__(self, *, client: DetailSource, topics: PaymentTopics, publish: Publish,
                 options: RelayOptions, max_relays: int,
                 metrics: MppgMetrics | None = None,
                 journal: RelayJournal | None = None) -> None:
        self._client = client
        self._topics = topics
        self._publish = publish
        self._options = options
        self._max = max_relays
        self._metrics = metrics
        self.journal = journal if journal is not None else RelayJournal(None)
        self._lock = threading.Lock()
        self._relays: dict[str, StatusRelay] = {}
        self._closed = False

    def start(self, detail: PaymentRequestDetail) -> str:
        """Relay ``detail``'s request; what happened, for the MQTT reply:

        ``started``, ``running`` (already relayed), ``final`` (status published, nothing to
        listen for), ``limit`` (``max_relays`` busy), ``disabled`` (``max_relays`` = 0),
        ``refused`` (MPPG's WebSocket URL is not ``wss://``).
        """
        if detail.status in FINAL:
            self._publish(self._topics.state(check_request_id(detail.payment_request_id)),
                          status_payload(detail), True)
            return "final"
        token = detail.websocket_token
        if token is not None and not secure_socket_url(token):
            return "refused"
        return self._start(detail, check_request_id(detail.payment_request_id), None)

    def resume(self) -> list[str]:
        """Restart the relays the journal lists (a bridge restart): each fetches its request
        first, publishes what it missed and its current state. Returns their ids."""
        resumed = []
        for request_id in self.journal.requests():
            try:
                check_request_id(request_id)
            except MppgError:
                self.journal.remove(request_id)
                continue
            if self._start(None, request_id, self.journal.published(request_id)) == "started":
                resumed.append(request_id)
        return resumed

    def _start(self, detail: PaymentRequestDetail | None, request_id: str,
               published: set[str] | None) -> str:
        with self._lock:
            if self._closed or self._max == 0:
                return "disabled"
            if request_id in self._relays:
                return "running"
            if len(self._relays) >= self._max:
                return "limit"
            relay = StatusRelay(detail, client=self._client, topics=self._topics,
                                publish=self._publish, options=self._options,
                                metrics=self._metrics, on_exit=self._exited,
                                request_id=request_id, published=published,
                                journal=self.journal)
            self._relays[relay.request_id] = relay
        relay.start()
        return "started"

    def _exited(self, relay: StatusRelay) -> None:
        with self._lock:
            if self._relays.get(relay.request_id) is relay:
                del self._relays[relay.request_id]

    def active(self) -> list[str]:
        with self._lock:
            return sorted(self._relays)

    def stop_all(self, timeout: float = 3.0) -> None:
        """Stop every relay; waits up to ``timeout`` in all for their threads."""
        with self._lock:
            self._closed = True
            relays = list(self._relays.values())
        for relay in relays:
            relay.stop()
        deadline = time.monotonic() + timeout
        for relay in relays:
            relay.join(max(0.0, deadline - time.monotonic()))


__all__ = ["RelayManager"]
