"""What MPPG sends back (spec §7): parsed leniently, re-serialized in MPPG's own camelCase.

Response models ignore unknown keys and fold key case (the service is .NET, whose JSON is
case-insensitive; the spec's tables say ``PaymentRequestID`` where its examples say
``paymentRequestID``), so a new field or a casing change on MPPG's side does not break the
bridge. Every shape the spec shows is accepted: ``transactions`` null, ``customerTranRef`` as
an Integer (§7.4) or a string (§7.2), times with or without a zone (list rows have none), and
the list as the §7.1 object or the bare array of rows of the §2.4 example. The request side,
which must be strict, is in ``bridge.mppg.definition``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import IntEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

# Amounts stay Decimal in Python; MPPG wants JSON numbers (pydantic would write strings).
# Two-decimal amounts survive the float round trip exactly in their shortest repr.
Amount = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


# customerTranID/Ref as MPPG returns them, relayed as they came: a string (§7.2) or a number
# (§7.4 types CustomerTranRef as Integer).
ClientValue = str | int


class TransactionType(IntEnum):
    """PaymentRequestTransactionType (§7.6)."""

    SALE = 1


class PaymentRequestStatus(IntEnum):
    """PaymentRequestStatusEnum (§7.7)."""

    DISABLED = 0
    PENDING = 1
    ACTIVE = 2
    EXPIRED = 3
    PAID = 4


def status_name(status: int) -> str:
    """``4`` -> ``"Paid"``; a value the spec does not know -> ``"Unknown(7)"``."""
    try:
        return PaymentRequestStatus(status).name.capitalize()
    except ValueError:
        return f"Unknown({status})"


class Wire(BaseModel):
    """Base of every MPPG JSON object: aliases are MPPG's names, key case is ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _fold_key_case(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known: dict[str, str] = {}
        for name, field in cls.model_fields.items():
            alias = field.alias or name
            known[alias.lower()] = alias
            known[name.lower()] = alias
        return {known.get(k.lower(), k) if isinstance(k, str) else k: v for k, v in data.items()}

    def to_wire(self) -> dict[str, Any]:
        """MPPG's JSON shape: camelCase names, numbers for amounts, absent fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class KeyValue(Wire):
    """One ``KeyValuePair<string, string>`` of ``additionalInfo``."""

    key: str
    value: str | None = None


class TransactionDetail(Wire):
    """One transaction on a payment request (§7.5, §7.9)."""

    payment_request_id: str | None = Field(default=None, alias="paymentRequestId")
    transaction_id: str | None = Field(default=None, alias="transactionId")
    transaction_date: datetime | None = Field(default=None, alias="transactionDate")
    authorized_amount: Amount | None = Field(default=None, alias="authorizedAmount")
    approved: bool | None = None


class TransactionSummary(Wire):
    """What the WebSocket delivers for each transaction (§7.8).

    ``transaction_response`` is MPPG's original processor response: it may hold masked card
    data, so it is relayed to MQTT but never logged (and kept out of ``repr``).
    """

    transaction_response: str | None = Field(default=None, alias="transactionResponse",
                                             repr=False)
    detail: TransactionDetail | None = None


class PaymentRequestData(Wire):
    """A payment request's definition as MPPG reports it (§7.4)."""

    transaction_type: int | None = Field(default=None, alias="transactionType")
    customer_tran_id: ClientValue | None = Field(default=None, alias="customerTranID")
    customer_tran_ref: ClientValue | None = Field(default=None, alias="customerTranRef")
    amount: Amount | None = None
    tax_amount: Amount | None = Field(default=None, alias="taxAmount")
    tax_percent: Amount | None = Field(default=None, alias="taxPercent")
    additional_info: list[KeyValue] | None = Field(default=None, alias="additionalInfo")
    misc_data: str | None = Field(default=None, alias="miscData")
    processor_name: str | None = Field(default=None, alias="processorName")
    prompt_for_tax: bool | None = Field(default=None, alias="promptForTax")
    prompt_for_tips: bool | None = Field(default=None, alias="promptForTips")
    terms_and_transaction_info: str | None = Field(default=None, alias="termsAndTransactionInfo")
    usage_count_limit: int | None = Field(default=None, alias="usageCountLimit")
    is_enabled: bool | None = Field(default=None, alias="isEnabled")
    activation_date: datetime | None = Field(default=None, alias="activationDate")
    expiration_date: datetime | None = Field(default=None, alias="expirationDate")
    current_usage_count: int | None = Field(default=None, alias="currentUsageCount")
    date_created: datetime | None = Field(default=None, alias="dateCreated")


class PaymentRequestDetail(Wire):
    """The answer to create, get and update (§7.3).

    ``websocket_token`` is a bearer URL (it carries an access token): relayed to the
    requester, kept out of logs and ``repr``.
    """

    mag_tran_id: str | None = Field(default=None, alias="magTranID")
    payment_request_id: str = Field(alias="paymentRequestID", min_length=1)
    payment_request_merchant_id: int | None = Field(default=None,
                                                    alias="paymentRequestMerchantID")
    payment_link: str | None = Field(default=None, alias="paymentLink")
    websocket_token: str | None = Field(default=None, alias="websocketToken", repr=False)
    definition: PaymentRequestData | None = None
    status: int
    transactions: list[TransactionDetail] = []

    @field_validator("transactions", mode="before")
    @classmethod
    def _null_is_none(cls, value: Any) -> Any:
        return [] if value is None else value


class PaymentRequestSummary(Wire):
    """One row of the list (§7.1)."""

    payment_request_id: str = Field(alias="paymentRequestID")
    transaction_type: int | None = Field(default=None, alias="transactionType")
    customer_tran_id: ClientValue | None = Field(default=None, alias="customerTranID")
    customer_tran_ref: ClientValue | None = Field(default=None, alias="customerTranRef")
    amount: Amount | None = None
    usage_count_limit: int | None = Field(default=None, alias="usageCountLimit")
    current_usage_count: int | None = Field(default=None, alias="currentUsageCount")
    is_enabled: bool | None = Field(default=None, alias="isEnabled")
    date_created: datetime | None = Field(default=None, alias="dateCreated")
    activation_date: datetime | None = Field(default=None, alias="activationDate")
    expiration_date: datetime | None = Field(default=None, alias="expirationDate")
    status: int


class PaymentRequestSummaryListInfo(Wire):
    """The answer to list (§7.1): one page, and the total before pagination (``None`` when
    MPPG answers the bare array of §2.4, which has no total)."""

    mag_tran_id: str | None = Field(default=None, alias="magTranID")
    total_records_available: int | None = Field(default=None, alias="totalRecordsAvailable")
    requests: list[PaymentRequestSummary] = []

    @model_validator(mode="before")
    @classmethod
    def _bare_array(cls, data: Any) -> Any:
        return {"requests": data} if isinstance(data, list) else data

    @field_validator("requests", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class ErrorBody(Wire):
    """PaymentRequestListError / PaymentRequestError (§7.10, §7.11)."""

    mag_tran_id: str | None = Field(default=None, alias="magTranID")
    code: int
    message: str | None = None
    payment_request_id: str | None = Field(default=None, alias="paymentRequestID")


__all__ = [
    "Amount",
    "ClientValue",
    "ErrorBody",
    "KeyValue",
    "PaymentRequestData",
    "PaymentRequestDetail",
    "PaymentRequestStatus",
    "PaymentRequestSummary",
    "PaymentRequestSummaryListInfo",
    "TransactionDetail",
    "TransactionSummary",
    "TransactionType",
    "Wire",
    "status_name",
]
