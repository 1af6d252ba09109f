"""What a status relay reads and writes: TransactionSummary messages as received, the
retained ``State`` payload, and which WebSocket URLs it may open (pure functions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from bridge.mppg.models import PaymentRequestDetail, TransactionSummary, status_name


def secure_socket_url(url: str) -> bool:
    """``wss://`` anywhere; ``ws://`` only to a loopback host."""
    parts = urlsplit(url)
    if parts.scheme == "wss" and parts.hostname:
        return True
    if parts.scheme != "ws" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def status_payload(detail: PaymentRequestDetail) -> bytes:
    """The retained ``State`` message: MPPG's status, its name and the usage counts."""
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
    except (ValueError, RecursionError):  # a hostile push must not end the relay
        return None
    if not isinstance(data, dict):
        return None
    try:
        TransactionSummary.model_validate(data)
    except ValidationError:
        return None
    return data


def expires_at(detail: PaymentRequestDetail) -> datetime | None:
    when = detail.definition.expiration_date if detail.definition else None
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # MPPG's naive times are UTC


__all__ = ["expires_at", "parse_summary", "secure_socket_url", "status_payload"]
