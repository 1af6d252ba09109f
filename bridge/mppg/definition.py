"""What we send to MPPG, checked against the rules the spec states before it leaves the bridge.

A request that breaks a rule the spec states (lengths, two decimals, the usage-count range,
transaction type 1, ISO 8601 times, the list filters' ranges) is refused here with the code
MPPG documents for it (``amount`` with three decimals -> 40023) and ``source`` ``"bridge"``.
Only those: anything else (a negative amount, an expiration before the activation, a tax
percent of 300) is MPPG's to judge, and its answer is relayed. Times without a zone are
accepted as MPPG itself writes them (its list rows have none). Unknown keys are refused
(40019): a misspelt ``ammount`` must not silently become the merchant's default.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bridge.mppg.errors import BridgeInputError, ErrorCode
from bridge.mppg.models import (
    Amount,
    KeyValue,
    PaymentRequestData,
    PaymentRequestStatus,
    TransactionType,
    Wire,
)

MAX_USAGE_COUNT: Final = 2_147_483_647
MAX_PAGE_SIZE: Final = 1000
_START_AFTER_END: Final = "start_after_end"

# "up to 2 decimal places" (§7.2): the only rule the spec gives amounts.
Money = Annotated[Amount, Field(decimal_places=2)]


def _number_as_text(value: Any) -> Any:
    # A number for a text field (MPPG returns customerTranRef as one, §7.4, and an update
    # sends the current value back) is its text, as §7.2 wants.
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return str(value)
    return value


Text256 = Annotated[str, BeforeValidator(_number_as_text), Field(max_length=256)]


class _Strict(Wire):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class PaymentRequestDefinition(_Strict):
    """The body of create and update (§3.3, §5.3, §7.2). ``None`` means "not provided": the
    merchant's onboarding defaults apply (§6.1)."""

    transaction_type: TransactionType = Field(default=TransactionType.SALE,
                                              alias="transactionType")
    customer_tran_id: Text256 | None = Field(default=None, alias="customerTranID")
    customer_tran_ref: Text256 | None = Field(default=None, alias="customerTranRef")
    amount: Money
    tax_amount: Money | None = Field(default=None, alias="taxAmount")
    tax_percent: Amount | None = Field(default=None, alias="taxPercent")
    additional_info: list[KeyValue] | None = Field(default=None, alias="additionalInfo")
    misc_data: Text256 | None = Field(default=None, alias="miscData")
    processor_name: Annotated[str, Field(max_length=128)] | None = Field(
        default=None, alias="processorName")
    prompt_for_tax: bool | None = Field(default=None, alias="promptForTax")
    prompt_for_tips: bool | None = Field(default=None, alias="promptForTips")
    terms_and_transaction_info: str | None = Field(default=None,
                                                   alias="termsAndTransactionInfo")
    usage_count_limit: Annotated[int, Field(ge=0, le=MAX_USAGE_COUNT)] | None = Field(
        default=None, alias="usageCountLimit")
    is_enabled: bool = Field(default=True, alias="isEnabled")
    # ISO 8601 (§7.2), with or without a zone: MPPG's own rows have none, and copying one
    # back into an update must work. Whether they are in order is MPPG's call.
    activation_date: datetime | None = Field(default=None, alias="activationDate")
    expiration_date: datetime | None = Field(default=None, alias="expirationDate")

    @field_validator("transaction_type", mode="before")
    @classmethod
    def _only_sale(cls, value: Any) -> Any:
        if isinstance(value, bool) or value not in (TransactionType.SALE, "1"):
            raise ValueError("must be 1 (SALE), the only type the API has")
        return TransactionType.SALE

    @field_validator("usage_count_limit", mode="before")
    @classmethod
    def _count_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true would otherwise pass as 1
            raise ValueError("must be an integer")
        return value


def _parse_day(value: Any) -> Any:
    """``20220413``, ``"20220413"`` or ``"2022-04-13"`` -> a date (the API's YYYYMMDD)."""
    if isinstance(value, bool):
        raise ValueError("must be a date as YYYYMMDD")
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{8}", text):
            try:
                return date(int(text[:4]), int(text[4:6]), int(text[6:]))
            except ValueError:
                raise ValueError("not a calendar date") from None
        return date.fromisoformat(text)
    return value


class ListQuery(_Strict):
    """The list filters (§2.2); ``None`` leaves MPPG's default (60 days, 20 a page, page 1,
    every status)."""

    ds: date | None = None
    de: date | None = None
    ps: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] | None = None
    pn: Annotated[int, Field(ge=1)] | None = None
    st: PaymentRequestStatus | None = None

    @field_validator("ds", "de", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        return _parse_day(value)

    @field_validator("ps", "pn", "st", mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        # JSON true would otherwise pass as 1.
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> ListQuery:
        if self.ds is not None and self.de is not None and self.ds > self.de:
            raise PydanticCustomError(_START_AFTER_END, "start date (ds) is later than "
                                      "end date (de)")
        return self

    def to_params(self) -> dict[str, str]:
        """Query-string parameters; dates as YYYYMMDD, absent filters left out."""
        params: dict[str, str] = {}
        for key in ("ds", "de"):
            day = getattr(self, key)
            if day is not None:
                params[key] = day.strftime("%Y%m%d")
        for key in ("ps", "pn", "st"):
            number = getattr(self, key)
            if number is not None:
                params[key] = str(int(number))
        return params


_ID_PATTERN: Final = re.compile(r"^[0-9A-Za-z-]{1,64}$")


def check_request_id(value: Any) -> str:
    """A payment request id as a path segment: letters, digits and '-' only (a GUID).

    Raises:
        BridgeInputError: 40018, before anything reaches the URL.
    """
    if not isinstance(value, str) or not _ID_PATTERN.match(value):
        raise BridgeInputError(ErrorCode.INVALID_PAYMENT_REQUEST_ID,
                             "paymentRequestID must be the request's id (a GUID)")
    return value


# The documented code for each field a rule can fail on (§7.12).
_FIELD_CODES: Final[dict[str, ErrorCode]] = {
    "transactiontype": ErrorCode.INVALID_TRANSACTION_TYPE,
    "customertranid": ErrorCode.INVALID_CUSTOMER_TRAN_ID,
    "customertranref": ErrorCode.INVALID_CUSTOMER_TRAN_REF,
    "amount": ErrorCode.INVALID_AMOUNT,
    "taxamount": ErrorCode.INVALID_TAX_AMOUNT,
    "usagecountlimit": ErrorCode.INVALID_USAGE_COUNT_LIMIT,
    "expirationdate": ErrorCode.INVALID_EXPIRATION_DATE,
    "processorname": ErrorCode.INVALID_PROCESSOR_NAME,
    "termsandtransactioninfo": ErrorCode.INVALID_TERMS,
    "miscdata": ErrorCode.INVALID_MISC_DATA,
    "ds": ErrorCode.INVALID_START_DATE,
    "de": ErrorCode.INVALID_END_DATE,
    "ps": ErrorCode.INVALID_PAGE_SIZE,
    "pn": ErrorCode.INVALID_PAGE_NUMBER,
    "st": ErrorCode.INVALID_STATUS,
    "paymentrequestid": ErrorCode.INVALID_PAYMENT_REQUEST_ID,
}


def _field_key(loc: tuple[int | str, ...]) -> str:
    return str(loc[0]).replace("_", "").lower() if loc else ""


def input_error(exc: ValidationError, *, default: ErrorCode) -> BridgeInputError:
    """The documented code for the first failing field, every failure in the message."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": "invalid"}
    if first.get("type") == _START_AFTER_END:
        code = ErrorCode.START_AFTER_END
    else:
        code = _FIELD_CODES.get(_field_key(tuple(first["loc"])), default)
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    return BridgeInputError(code, "; ".join(parts))


def parse_definition(data: Any, *, default_processor: str | None = None
                     ) -> PaymentRequestDefinition:
    """Validate a create/update body.

    Args:
        data: the JSON object as parsed.
        default_processor: the bridge's ``mppg.processor_name``, used when none is given.

    Raises:
        BridgeInputError: with the field's documented code (40019 when no field fits).
    """
    if not isinstance(data, dict):
        raise BridgeInputError(ErrorCode.INPUT_FORMAT, "the definition must be a JSON object")
    try:
        definition = PaymentRequestDefinition.model_validate(data)
    except ValidationError as exc:
        raise input_error(exc, default=ErrorCode.INVALID_DEFINITION) from None
    if default_processor and not definition.processor_name:
        definition = definition.model_copy(update={"processor_name": default_processor})
    return definition


def parse_list_query(data: Any) -> ListQuery:
    """Validate list filters. Raises ``BridgeInputError`` (40011..40017, else 40010)."""
    if not isinstance(data, dict):
        raise BridgeInputError(ErrorCode.INPUT_FORMAT, "the filters must be a JSON object")
    try:
        return ListQuery.model_validate(data)
    except ValidationError as exc:
        raise input_error(exc, default=ErrorCode.INPUT_FORMAT) from None


_DEFINITION_KEYS: Final = frozenset(
    field.alias or name for name, field in PaymentRequestDefinition.model_fields.items())


def merged_definition(current: PaymentRequestData | None, changes: dict[str, Any]
                      ) -> PaymentRequestDefinition:
    """An update as a read-modify-write: the request's current definition (as GET returned
    it) with ``changes`` over it, so a field left out keeps its value (``isEnabled`` left out
    does not re-enable a disabled request).

    Raises:
        BridgeInputError: ``changes`` (or the merge) breaks a documented rule.
    """
    if not isinstance(changes, dict):
        raise BridgeInputError(ErrorCode.INPUT_FORMAT, "the changes must be a JSON object")
    base: dict[str, Any] = {}
    if current is not None:
        base = {k: v for k, v in current.to_wire().items() if k in _DEFINITION_KEYS}
    try:  # the changes alone first: their errors name their own fields
        PaymentRequestDefinition.model_validate({"amount": 0, **changes})
    except ValidationError as exc:
        raise input_error(exc, default=ErrorCode.INVALID_DEFINITION) from None
    by_alias = {k: v for k, v in changes.items()}
    for name, field in PaymentRequestDefinition.model_fields.items():
        if name in by_alias and field.alias:  # python names given: store under the alias
            by_alias[field.alias] = by_alias.pop(name)
    return parse_definition({**base, **by_alias})


__all__ = [
    "MAX_PAGE_SIZE",
    "MAX_USAGE_COUNT",
    "ListQuery",
    "PaymentRequestDefinition",
    "check_request_id",
    "input_error",
    "merged_definition",
    "parse_definition",
    "parse_list_query",
]
