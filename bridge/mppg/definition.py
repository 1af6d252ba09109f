"""What we send to MPPG, checked against the spec's rules before it leaves the bridge.

A request that breaks a documented rule is refused here with the code MPPG would give
(``amount`` with three decimals -> 40023), so a consumer sees the same error either way and
a bad request costs no round trip. Unknown keys are refused (40019): a misspelt
``ammount`` must not silently become the merchant's default.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Final

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bridge.mppg.errors import ErrorCode, MppgInputError
from bridge.mppg.models import Amount, KeyValue, PaymentRequestStatus, TransactionType, Wire

MAX_USAGE_COUNT: Final = 2_147_483_647
MAX_PAGE_SIZE: Final = 1000
_START_AFTER_END: Final = "start_after_end"

# "up to 2 decimal places" (§7.2); negative amounts make no sense for a SALE.
Money = Annotated[Amount, Field(ge=0, decimal_places=2)]
Text256 = Annotated[str, Field(max_length=256)]


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
    # Not constrained by the spec beyond being "the percent"; 0..100 is what a percent is.
    tax_percent: Annotated[Amount, Field(ge=0, le=100)] | None = Field(default=None,
                                                                       alias="taxPercent")
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
    # Zone required: a naive time would mean whatever MPPG's server clock zone is.
    activation_date: AwareDatetime | None = Field(default=None, alias="activationDate")
    expiration_date: AwareDatetime | None = Field(default=None, alias="expirationDate")

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

    @field_validator("expiration_date")
    @classmethod
    def _after_activation(cls, value: datetime | None, info: Any) -> datetime | None:
        activation = info.data.get("activation_date")
        if value is not None and activation is not None and value <= activation:
            raise ValueError("must be later than activationDate")
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
        MppgInputError: 40018, before anything reaches the URL.
    """
    if not isinstance(value, str) or not _ID_PATTERN.match(value):
        raise MppgInputError(ErrorCode.INVALID_PAYMENT_REQUEST_ID,
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


def input_error(exc: ValidationError, *, default: ErrorCode) -> MppgInputError:
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
    return MppgInputError(code, "; ".join(parts))


def parse_definition(data: Any, *, default_processor: str | None = None
                     ) -> PaymentRequestDefinition:
    """Validate a create/update body.

    Args:
        data: the JSON object as parsed.
        default_processor: the bridge's ``mppg.processor_name``, used when none is given.

    Raises:
        MppgInputError: with the field's documented code (40019 when no field fits).
    """
    if not isinstance(data, dict):
        raise MppgInputError(ErrorCode.INPUT_FORMAT, "the definition must be a JSON object")
    try:
        definition = PaymentRequestDefinition.model_validate(data)
    except ValidationError as exc:
        raise input_error(exc, default=ErrorCode.INVALID_DEFINITION) from None
    if default_processor and not definition.processor_name:
        definition = definition.model_copy(update={"processor_name": default_processor})
    return definition


def parse_list_query(data: Any) -> ListQuery:
    """Validate list filters. Raises ``MppgInputError`` (40011..40017, else 40010)."""
    if not isinstance(data, dict):
        raise MppgInputError(ErrorCode.INPUT_FORMAT, "the filters must be a JSON object")
    try:
        return ListQuery.model_validate(data)
    except ValidationError as exc:
        raise input_error(exc, default=ErrorCode.INPUT_FORMAT) from None


__all__ = [
    "MAX_PAGE_SIZE",
    "MAX_USAGE_COUNT",
    "ListQuery",
    "PaymentRequestDefinition",
    "check_request_id",
    "input_error",
    "parse_definition",
    "parse_list_query",
]
