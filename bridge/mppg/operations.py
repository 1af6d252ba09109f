"""The four operations as the MQTT service runs them, on top of the plain HTTP client.

What they add to one HTTP call each:
- create: ``usageCountLimit`` defaults to 1 (a link paid once; 0, unlimited, never becomes
  Paid); the reply always has the payment link (MPPG's create answer may have none, §3.4:
  one GET fetches it); after an ambiguous failure (MPPG timed out, or answered 200 with
  something unreadable) the request may exist: it is looked up by ``customerTranID`` before
  failure is reported, so a client's retry does not create a second one.
- update: a read-modify-write (GET, the given fields over the current definition, PUT), so a
  field left out keeps its value.
- every call shares one deadline (``operation_timeout``).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog

from bridge.mppg.client import MppgClient
from bridge.mppg.definition import (
    PaymentRequestDefinition,
    check_request_id,
    merged_definition,
    parse_definition,
    parse_list_query,
)
from bridge.mppg.errors import (
    BridgeCode,
    BridgeInputError,
    ErrorCode,
    MppgError,
    MppgUnavailableError,
)
from bridge.mppg.models import PaymentRequestDetail, PaymentRequestSummary

_log = structlog.get_logger("bridge.mppg")

DEFAULT_USAGE_COUNT_LIMIT: Final = 1
# Ambiguous outcomes of a create: MPPG may have stored it.
AMBIGUOUS: Final = frozenset({BridgeCode.TIMEOUT, BridgeCode.BAD_GATEWAY})
# A request found by the lookup must have been created this close to our attempt.
LOOKUP_WINDOW: Final = timedelta(minutes=5)
LOOKUP_PAGES: Final = 3
# A redelivered request may be as old as the payments session lets the broker keep it.
REDELIVERY_WINDOW: Final = timedelta(hours=1)
_RECENT_IDS: Final = 4096


@dataclass
class Outcome:
    """One operation's result for the reply."""

    result: dict[str, Any]
    detail: PaymentRequestDetail | None = None
    notes: dict[str, Any] | None = None


class Deadline:
    """Seconds left for an operation; its HTTP calls take what remains."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self._end - time.monotonic()
        if remaining <= 0:
            raise MppgUnavailableError(BridgeCode.TIMEOUT, f"the operation did not finish "
                                       f"within {self.seconds:g} s (mppg.operation_timeout)")
        return remaining


class Operations:
    """create/list/get/update for the MQTT service."""

    def __init__(self, client: MppgClient, *, default_processor: str | None) -> None:
        self.client = client
        self._default_processor = default_processor
        self._returned: deque[str] = deque(maxlen=_RECENT_IDS)  # ids already handed out

    def run(self, op: str, fields: dict[str, Any], deadline: Deadline, *,
            redelivered: bool = False) -> Outcome:
        """One operation. ``redelivered``: the broker sent this request before (it was not
        acknowledged: the bridge stopped or lost its connection while running it), so a
        create may already exist and is looked up by ``customerTranID`` first."""
        if op == "list":
            query = parse_list_query(fields)
            return Outcome(self.client.list_requests(query, timeout=deadline.left()).to_wire())
        if op == "create":
            return self._create(fields, deadline, redelivered=redelivered)
        if op == "get":
            extra = set(fields) - {"paymentRequestID", "id"}
            if extra:
                raise BridgeInputError(ErrorCode.INPUT_FORMAT,
                                       f"unknown keys: {', '.join(sorted(extra))}")
            detail = self.client.get(_request_id(fields), timeout=deadline.left())
            return Outcome(detail.to_wire(), detail)
        request_id = _request_id(fields)
        changes = {k: v for k, v in fields.items() if k not in ("paymentRequestID", "id")}
        current = self.client.get(request_id, timeout=deadline.left())
        definition = merged_definition(current.definition, changes)
        detail = self.client.update(request_id, definition, timeout=deadline.left())
        return Outcome(detail.to_wire(), detail)

    def _create(self, fields: dict[str, Any], deadline: Deadline, *,
                redelivered: bool = False) -> Outcome:
        fields = dict(fields)
        if not any(k.lower().replace("_", "") == "usagecountlimit" for k in fields):
            fields["usageCountLimit"] = DEFAULT_USAGE_COUNT_LIMIT
        definition = parse_definition(fields, default_processor=self._default_processor)
        started = datetime.now(UTC)
        notes: dict[str, Any] = {}
        earlier = self._made_before(definition, started, deadline) if redelivered else None
        if earlier is not None:
            detail = earlier
            notes["recovered"] = True
        else:
            try:
                detail = self.client.create(definition, timeout=deadline.left())
            except MppgError as exc:
                if exc.code not in AMBIGUOUS:
                    raise
                detail = self._look_up(definition, started, exc, deadline)
                notes["recovered"] = True
        self._returned.append(detail.payment_request_id)
        if detail.payment_link is None:
            # The spec's own create answer has no link (§3.4); GET has it (§6.4).
            try:
                detail = self.client.get(detail.payment_request_id, timeout=deadline.left())
            except MppgError as exc:
                notes["linkError"] = exc.to_dict()
        return Outcome(detail.to_wire(), detail, notes or None)

    def _made_before(self, definition: PaymentRequestDefinition, started: datetime,
                     deadline: Deadline) -> PaymentRequestDetail | None:
        """The request a redelivered create made the first time, if MPPG has it: same
        ``customerTranID`` and amount, created within ``REDELIVERY_WINDOW``. Without a
        ``customerTranID``, or when the lookup fails, None: the create runs (a lookup that
        cannot answer must not refuse a payment)."""
        tran_id = definition.customer_tran_id
        if not tran_id:
            return None
        try:
            match = self._find(tran_id, definition, deadline,
                               earliest=started - REDELIVERY_WINDOW, skip_returned=False)
            if match is None:
                return None
            _log.info("mppg_redelivered_create_found", payment_request=match)
            return self.client.get(match, timeout=deadline.left())
        except MppgError as exc:
            _log.warning("mppg_redelivered_lookup_failed", code=exc.code)
            return None

    def _look_up(self, definition: PaymentRequestDefinition, started: datetime,
                 failure: MppgError, deadline: Deadline) -> PaymentRequestDetail:
        """The request an ambiguous create may have made, or ``failure`` re-raised (its
        message says what is known)."""
        tran_id = definition.customer_tran_id
        if not tran_id:
            failure.message += ("; MPPG may have created it: without a customerTranID the "
                                "bridge cannot check, list before retrying")
            raise failure
        try:
            match = self._find(tran_id, definition, deadline,
                               earliest=started - LOOKUP_WINDOW)
            if match is not None:
                _log.info("mppg_create_recovered", payment_request=match,
                          code=failure.code)
                return self.client.get(match, timeout=deadline.left())
        except MppgError as exc:
            failure.message += (f"; the lookup by customerTranID failed too ({exc.code}): "
                                "MPPG may have created it, list before retrying")
            raise failure from None
        failure.message += "; no request with this customerTranID was created: safe to retry"
        raise failure

    def _find(self, tran_id: str, definition: PaymentRequestDefinition, deadline: Deadline,
              *, earliest: datetime, skip_returned: bool = True) -> str | None:
        """The newest request with this ``customerTranID`` and amount created since
        ``earliest``, skipping ids this process handed out already if ``skip_returned`` (a
        redelivery may be of a request we did hand out)."""
        window = (earliest, datetime.now(UTC) + LOOKUP_WINDOW)
        # No end date: MPPG's "today" is in its own zone, which we do not know.
        first_day = min(datetime.now(UTC).date() - timedelta(days=1), earliest.date())
        best: PaymentRequestSummary | None = None
        for page in range(1, LOOKUP_PAGES + 1):
            query = parse_list_query({"ds": first_day.isoformat(),
                                      "ps": 1000, "pn": page})
            listing = self.client.list_requests(query, timeout=deadline.left())
            for row in listing.requests:
                if (str(row.customer_tran_id) != tran_id or row.amount != definition.amount
                        or (skip_returned and row.payment_request_id in self._returned)):
                    continue
                created = row.date_created
                if created is None:
                    continue
                created = _aware(created)
                if window[0] <= created <= window[1] and (
                        best is None or best.date_created is None
                        or created > _aware(best.date_created)):
                    best = row
            if len(listing.requests) < 1000:
                break
        return best.payment_request_id if best is not None else None


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _request_id(fields: dict[str, Any]) -> str:
    return check_request_id(fields.get("paymentRequestID", fields.get("id")))


__all__ = ["DEFAULT_USAGE_COUNT_LIMIT", "Deadline", "Operations", "Outcome"]
