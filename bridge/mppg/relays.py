"""At most ``max_relays`` status relays at once, one per payment request."""

from __future__ import annotations

import threading
import time

from bridge.mppg.definition import check_request_id
from bridge.mppg.metrics import MppgMetrics
from bridge.mppg.models import PaymentRequestDetail
from bridge.mppg.relay import (
    FINAL,
    DetailSource,
    Publish,
    RelayOptions,
    StatusRelay,
    status_payload,
)
from bridge.mppg.topics import PaymentTopics


class RelayManager:
    """Starts relays, at most ``max_relays`` at once and one per payment request."""

    def __init__(self, *, client: DetailSource, topics: PaymentTopics, publish: Publish,
                 options: RelayOptions, max_relays: int,
                 metrics: MppgMetrics | None = None) -> None:
        self._client = client
        self._topics = topics
        self._publish = publish
        self._options = options
        self._max = max_relays
        self._metrics = metrics
        self._lock = threading.Lock()
        self._relays: dict[str, StatusRelay] = {}
        self._closed = False

    def start(self, detail: PaymentRequestDetail) -> str:
        """Relay ``detail``'s request; what happened, for the MQTT reply:

        ``started``, ``running`` (already relayed), ``final`` (status published, nothing to
        listen for), ``limit`` (``max_relays`` busy), ``disabled`` (``max_relays`` = 0).
        """
        if detail.status in FINAL:
            self._publish(self._topics.status(check_request_id(detail.payment_request_id)),
                          status_payload(detail), True)
            return "final"
        with self._lock:
            if self._closed or self._max == 0:
                return "disabled"
            if detail.payment_request_id in self._relays:
                return "running"
            if len(self._relays) >= self._max:
                return "limit"
            relay = StatusRelay(detail, client=self._client, topics=self._topics,
                                publish=self._publish, options=self._options,
                                metrics=self._metrics, on_exit=self._exited)
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
