"""The fake MPPG's input rules, written from the spec (§2.2, §7.2, §7.4, §7.12) on their own.

Deliberately independent of ``bridge.mppg.definition``: the fake checks the bridge, so
sharing its code would make the tests agree with themselves.

Two layers, as an ASP.NET service has them: model binding (a body that is not JSON, or a
value of the wrong JSON type, or a time that is not ISO 8601) fails with ``BindingError``,
which the fake answers with ASP.NET's own validation body (no ``code``); the service's rules
then fail with ``RefusalError`` and a documented code. Times without a zone are accepted
(taken as UTC), an expiration equal to the activation is accepted (the spec's own example),
and a past expiration is accepted (the request is then Expired).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

MAX_INT32 = 2_147_483_647


class BindingError(Exception):
    """ASP.NET model binding failed: ``errors`` maps JSON paths to messages."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.errors = {path: [message]}


class RefusalError(Exception):
    """An input error: the documented code and a message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _is_number(value: Any) -> bool:
    return isinstance(value, int | Decimal | float) and not isinstance(value, bool)


def _money(body: dict[str, Any], key: str, code: int, *, required: bool) -> Decimal | None:
    value = body.get(key)
    if value is None:
        if required:
            raise RefusalError(code, f"{key} is required")
        return None
    if not _is_number(value):
        raise BindingError(f"$.{key}", f"The JSON value could not be converted to "
                           f"System.Decimal. Path: $.{key}")
    amount = Decimal(str(value))
    if not amount.is_finite() or amount < 0:
        raise RefusalError(code, f"{key} must be a non-negative number")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise RefusalError(code, f"{key} has more than 2 decimal places")
    return amount


def _text(body: dict[str, Any], key: str, code: int, limit: int | None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BindingError(f"$.{key}", f"The JSON value could not be converted to "
                           f"System.String. Path: $.{key}")
    if limit is not None and len(value) > limit:
        raise RefusalError(code, f"{key} must be a string of at most {limit} characters")
    return value


def _flag(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise BindingError(f"$.{key}", f"The JSON value could not be converted to "
                           f"System.Boolean. Path: $.{key}")
    return value


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 time; naive ones are taken as UTC (as the service stores them)."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _time(body: dict[str, Any], key: str) -> datetime | None:
    if body.get(key) is None:
        return None
    parsed = parse_time(body[key])
    if parsed is None:
        raise BindingError(f"$.{key}", f"The JSON value could not be converted to "
                           f"System.DateTime. Path: $.{key}")
    return parsed


def check_definition(body: Any, defaults: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A PaymentRequestDefinition as stored: checked, merchant defaults filled in.

    Raises:
        BindingError: not an object, or a value of the wrong type.
        RefusalError: the first rule broken, with its documented code.
    """
    if not isinstance(body, dict):
        raise BindingError("$", "The JSON value could not be converted to "
                           "PaymentRequestDefinition. Path: $")
    kind = body.get("transactionType", 1)
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise BindingError("$.transactionType", "The JSON value could not be converted to "
                           "PaymentRequestTransactionType. Path: $.transactionType")
    limit = body.get("usageCountLimit", 0)
    limit = 0 if limit is None else limit
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise BindingError("$.usageCountLimit", "The JSON value could not be converted to "
                           "System.Int32. Path: $.usageCountLimit")
    info = body.get("additionalInfo")
    if info is not None and not (isinstance(info, list) and all(
            isinstance(i, dict) and isinstance(i.get("key"), str) for i in info)):
        raise BindingError("$.additionalInfo", "The JSON value could not be converted to "
                           "KeyValuePair[]. Path: $.additionalInfo")
    percent = body.get("taxPercent")
    if percent is not None and not _is_number(percent):
        raise BindingError("$.taxPercent", "The JSON value could not be converted to "
                           "System.Decimal. Path: $.taxPercent")
    activation = _time(body, "activationDate")
    expiration = _time(body, "expirationDate")
    if kind != 1:
        raise RefusalError(40020, "transactionType must be 1 (SALE)")
    out: dict[str, Any] = {"transactionType": 1}
    out["customerTranID"] = _text(body, "customerTranID", 40026, 256)
    out["customerTranRef"] = _text(body, "customerTranRef", 40027, 256)
    out["amount"] = _money(body, "amount", 40023, required=True)
    out["taxAmount"] = _money(body, "taxAmount", 40024, required=False)
    if percent is not None and not 0 <= percent <= 100:
        raise RefusalError(40019, "taxPercent must be a number from 0 to 100")
    out["taxPercent"] = percent
    out["additionalInfo"] = info
    out["miscData"] = _text(body, "miscData", 40030, 256)
    out["processorName"] = (_text(body, "processorName", 40028, 128)
                            or defaults["processorName"])
    out["termsAndTransactionInfo"] = (_text(body, "termsAndTransactionInfo", 40029, None)
                                      or defaults["termsAndTransactionInfo"])
    for key in ("promptForTax", "promptForTips"):
        flag = _flag(body, key)
        out[key] = defaults[key] if flag is None else flag
    enabled = _flag(body, "isEnabled")
    out["isEnabled"] = True if enabled is None else enabled
    if not 0 <= limit <= MAX_INT32:
        raise RefusalError(40021, "usageCountLimit must be 0..2147483647")
    out["usageCountLimit"] = limit
    activation = activation if activation is not None else now
    if expiration is None:
        expiration = activation + timedelta(days=60)
    elif expiration < activation:
        raise RefusalError(40022, "expirationDate must not be before activationDate")
    out["activationDate"] = activation
    out["expirationDate"] = expiration
    return out


def _day(text: str | None, code: int, default: date) -> date:
    if text is None:
        return default
    if len(text) != 8 or not text.isdigit():
        raise RefusalError(code, "dates are YYYYMMDD")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise RefusalError(code, "not a calendar date") from None


def _int(text: str | None, default: int, code: int) -> int:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise RefusalError(code, "page size and number must be integers") from None


def check_list_query(params: dict[str, str], today: date) -> tuple[date, date, int, int,
                                                                    int | None]:
    """(ds, de, ps, pn, st) with the documented defaults. Raises ``RefusalError``."""
    ds = _day(params.get("ds"), 40011, today - timedelta(days=60))
    de = _day(params.get("de"), 40012, today)
    if ds > de:
        raise RefusalError(40013, "Start Date can't be later than End Date")
    ps = _int(params.get("ps"), 20, 40016)
    pn = _int(params.get("pn"), 1, 40016)
    if not 1 <= ps <= 1000:
        raise RefusalError(40014, "page size must be 1..1000")
    if pn < 1:
        raise RefusalError(40015, "page number must be 1 or more")
    status: int | None = None
    if params.get("st") is not None:
        try:
            status = int(params["st"])
        except ValueError:
            raise RefusalError(40017, "status must be 0..4") from None
        if not 0 <= status <= 4:
            raise RefusalError(40017, "status must be 0..4")
    return ds, de, ps, pn, status
