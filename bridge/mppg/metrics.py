"""Payment-request metrics, registered beside the bridge's on the same registry.

Kept here rather than in ``bridge.metrics`` so the feature stays in one package; label sets
are closed (four operations, three outcomes).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from bridge.mppg.topics import OPERATIONS

_NS = "magtek_bridge"
OUTCOMES = ("ok", "mppg_error", "bridge_error")


class MppgMetrics:
    """Counters for MQTT payment requests and the WebSocket relays."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            f"{_NS}_payment_requests", "MQTT payment-request operations by outcome",
            ["op", "outcome"], registry=r,
        )
        self.relays_active = Gauge(
            f"{_NS}_payment_relays_active", "Payment requests whose WebSocket is relayed now",
            registry=r,
        )
        self.transactions_relayed = Counter(
            f"{_NS}_payment_transactions_relayed", "TransactionSummary messages republished",
            registry=r,
        )
        self.transactions_recovered = Counter(
            f"{_NS}_payment_transactions_recovered", "Transactions the WebSocket never "
            "delivered, published from a GET instead", registry=r,
        )
        self.relays_resumed = Counter(
            f"{_NS}_payment_relays_resumed", "Relays resumed from the journal at start",
            registry=r,
        )
        self.creates_recovered = Counter(
            f"{_NS}_payment_creates_recovered", "Creates that failed ambiguously and were found "
            "by customerTranID", registry=r,
        )
        self.relay_connects = Counter(
            f"{_NS}_payment_relay_connects", "WebSocket connection attempts by the relays",
            registry=r,
        )
        for op in OPERATIONS:
            for outcome in OUTCOMES:
                self.requests.labels(op, outcome)

    def request_done(self, op: str, outcome: str) -> None:
        self.requests.labels(op, outcome).inc()


__all__ = ["OUTCOMES", "MppgMetrics"]
