"""Payment-request topics under the bridge root: ``<bridge root>/PaymentRequest/...``.

The retained per-request topic is ``.../<paymentRequestID>/State``, not ``.../Status``:
MagTek's consumer pages find readers with wildcards ending in ``/Status`` at several depths
(``MagTek/+/+/+/+/Status`` and deeper), and a retained ``.../<id>/Status`` at a matching depth
would show up in their device list as a reader that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

OPERATIONS: Final = ("create", "list", "get", "update")


@dataclass(frozen=True, slots=True)
class PaymentTopics:
    """``<root>/PaymentRequest/<op>`` in, ``.../<op>/response`` out, and per request
    ``.../<paymentRequestID>/Transaction`` and ``.../<paymentRequestID>/State`` (retained).

    Args:
        bridge_root: ``BridgeTopics.root``, e.g. ``MagTek/Bridge/store-1``.
    """

    bridge_root: str

    @property
    def base(self) -> str:
        return f"{self.bridge_root}/PaymentRequest"

    def request(self, op: str) -> str:
        return f"{self.base}/{op}"

    def response(self, op: str) -> str:
        return f"{self.base}/{op}/response"

    def transaction(self, request_id: str) -> str:
        return f"{self.base}/{request_id}/Transaction"

    def state(self, request_id: str) -> str:
        return f"{self.base}/{request_id}/State"

    def subscriptions(self, qos: int = 1) -> list[tuple[str, int]]:
        return [(self.request(op), qos) for op in OPERATIONS]

    def operation_of(self, topic: str) -> str | None:
        """The operation a request topic names, or ``None`` for any other topic."""
        op = topic.removeprefix(f"{self.base}/")
        return op if op != topic and op in OPERATIONS else None


__all__ = ["OPERATIONS", "PaymentTopics"]
