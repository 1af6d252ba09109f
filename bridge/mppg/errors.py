"""MPPG error codes and the exceptions they become.

MPPG's codes (spec §7.12) follow one scheme: HTTP status * 100 + a number. The bridge's own
codes (the service could not be reached, answered nonsense, the bridge is busy) follow the
same scheme with statuses MPPG never uses (409, 413, 502, 503, 504), so a consumer can switch
on one integer and still tell who refused. ``MppgError.source`` says it outright: a request
the bridge refuses by its own check of a documented rule keeps MPPG's code but says
``"bridge"``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final, Literal

from bridge.errors import BridgeError


class ErrorCode(IntEnum):
    """PaymentRequestErrorCode, as documented (spec §7.12)."""

    INPUT_FORMAT = 40010
    INVALID_START_DATE = 40011
    INVALID_END_DATE = 40012
    START_AFTER_END = 40013
    INVALID_PAGE_SIZE = 40014
    INVALID_PAGE_NUMBER = 40015
    INVALID_PAGE_SIZE_OR_NUMBER = 40016
    INVALID_STATUS = 40017
    INVALID_PAYMENT_REQUEST_ID = 40018
    INVALID_DEFINITION = 40019
    INVALID_TRANSACTION_TYPE = 40020
    INVALID_USAGE_COUNT_LIMIT = 40021
    INVALID_EXPIRATION_DATE = 40022
    INVALID_AMOUNT = 40023
    INVALID_TAX_AMOUNT = 40024
    INVALID_MAGTRANGUID = 40025
    INVALID_CUSTOMER_TRAN_ID = 40026
    INVALID_CUSTOMER_TRAN_REF = 40027
    INVALID_PROCESSOR_NAME = 40028
    INVALID_TERMS = 40029
    INVALID_MISC_DATA = 40030
    AUTHENTICATION = 40100
    AUTHORIZATION = 40300
    INTERNAL = 50000
    NOT_SET_UP = 50001


DESCRIPTIONS: Final[dict[int, str]] = {
    ErrorCode.INPUT_FORMAT: "Input format error",
    ErrorCode.INVALID_START_DATE: "Invalid Start Date",
    ErrorCode.INVALID_END_DATE: "Invalid End Date",
    ErrorCode.START_AFTER_END: "Start Date can't be later than End Date",
    ErrorCode.INVALID_PAGE_SIZE: "Invalid Page Size",
    ErrorCode.INVALID_PAGE_NUMBER: "Invalid Page Number",
    ErrorCode.INVALID_PAGE_SIZE_OR_NUMBER: "Invalid Page Size Or Number",
    ErrorCode.INVALID_STATUS: "Invalid Payment Request status",
    ErrorCode.INVALID_PAYMENT_REQUEST_ID: "Invalid Payment Request ID",
    ErrorCode.INVALID_DEFINITION: "Invalid Payment Request definition",
    ErrorCode.INVALID_TRANSACTION_TYPE: "Invalid transaction type",
    ErrorCode.INVALID_USAGE_COUNT_LIMIT: "Invalid usage count limit",
    ErrorCode.INVALID_EXPIRATION_DATE: "Invalid expiration date",
    ErrorCode.INVALID_AMOUNT: "Invalid amount",
    ErrorCode.INVALID_TAX_AMOUNT: "Invalid tax amount",
    ErrorCode.INVALID_MAGTRANGUID: "Invalid MPPG MagTranGUID",
    ErrorCode.INVALID_CUSTOMER_TRAN_ID: "Invalid customerTranID",
    ErrorCode.INVALID_CUSTOMER_TRAN_REF: "Invalid customerTranRef",
    ErrorCode.INVALID_PROCESSOR_NAME: "Invalid processorName",
    ErrorCode.INVALID_TERMS: "Invalid termsAndTransactionInfo",
    ErrorCode.INVALID_MISC_DATA: "Invalid miscData",
    ErrorCode.AUTHENTICATION: "Authentication Error",
    ErrorCode.AUTHORIZATION: "Authorization Error",
    ErrorCode.INTERNAL: "Internal Server Error",
    ErrorCode.NOT_SET_UP: "Target user is not setup for MPPG",
}


class BridgeCode(IntEnum):
    """Codes the bridge itself answers with (never sent by MPPG)."""

    RETAINED_REQUEST = 40900   # a retained MQTT request: a stale replay, never run
    CORRELATION_REUSED = 40901  # same requester and correlation id, different request
    TOO_LARGE = 41300          # the MQTT request is over mppg.max_request_bytes
    BAD_GATEWAY = 50200        # MPPG answered something we cannot read
    UNAVAILABLE = 50300        # MPPG could not be reached
    BUSY = 50301               # the bridge's request queue is full
    TIMEOUT = 50400            # MPPG did not answer in time


Source = Literal["mppg", "bridge"]


class MppgError(BridgeError):
    """A payment-request operation failed; ``code`` is MPPG's or a ``BridgeCode``.

    A ``BridgeError``, so the CLI's generic handler reports it (exit 1) with the code.
    """

    source: Source = "mppg"

    def __init__(self, code: int, message: str, *, http_status: int | None = None,
                 mag_tran_id: str | None = None, payment_request_id: str | None = None) -> None:
        self.code = int(code)
        self.message = message or DESCRIPTIONS.get(self.code, "error")
        self.http_status = http_status
        self.mag_tran_id = mag_tran_id
        self.payment_request_id = payment_request_id
        super().__init__(f"{self.code} {self.message}")

    def __str__(self) -> str:
        # From the attributes: what is learnt later (a create's lookup) is added to message.
        return f"{self.code} {self.message}"

    def to_dict(self) -> dict[str, object]:
        """The ``error`` object of an MQTT reply (no secrets: MPPG's text and ids only)."""
        out: dict[str, object] = {"code": self.code, "message": self.message,
                                  "source": self.source}
        if self.http_status is not None:
            out["httpStatus"] = self.http_status
        if self.mag_tran_id:
            out["magTranID"] = self.mag_tran_id
        if self.payment_request_id:
            out["paymentRequestID"] = self.payment_request_id
        return out


class MppgInputError(MppgError):
    """Input refused (400xx), by MPPG or by the bridge's own check of the same rules."""


class MppgAuthenticationError(MppgError):
    """Wrong or missing credentials (HTTP 401, code 40100)."""


class MppgAuthorizationError(MppgError):
    """Credentials accepted, operation not allowed (HTTP 403, code 40300)."""


class MppgServerError(MppgError):
    """MPPG failed on its side (500xx)."""


class MppgNotSetUpError(MppgServerError):
    """The merchant's MPPG user is not set up for payment requests (50001)."""


class BridgeSideError(MppgError):
    """Raised by the bridge, not by MPPG: ``code`` is a ``BridgeCode``."""

    source: Source = "bridge"


class BridgeInputError(MppgInputError):
    """The bridge refused the input itself, by a rule the spec states: MPPG's code (400xx),
    ``source`` ``"bridge"`` (MPPG never saw it)."""

    source: Source = "bridge"


class MppgUnavailableError(BridgeSideError):
    """MPPG could not be reached, or did not answer in time."""


class MppgProtocolError(BridgeSideError):
    """MPPG answered with a status or body the spec does not describe."""


def error_for(code: int, message: str, *, http_status: int | None = None,
              mag_tran_id: str | None = None,
              payment_request_id: str | None = None) -> MppgError:
    """The exception type that fits an MPPG error code (unknown codes: by HTTP status)."""
    kind: type[MppgError]
    if code == ErrorCode.AUTHENTICATION or http_status == 401:
        kind = MppgAuthenticationError
    elif code == ErrorCode.AUTHORIZATION or http_status == 403:
        kind = MppgAuthorizationError
    elif code == ErrorCode.NOT_SET_UP:
        kind = MppgNotSetUpError
    elif 40000 <= code < 50000:
        kind = MppgInputError
    else:
        kind = MppgServerError
    return kind(code, message, http_status=http_status, mag_tran_id=mag_tran_id,
                payment_request_id=payment_request_id)


__all__ = [
    "DESCRIPTIONS",
    "BridgeCode",
    "BridgeInputError",
    "BridgeSideError",
    "ErrorCode",
    "MppgAuthenticationError",
    "MppgAuthorizationError",
    "MppgError",
    "MppgInputError",
    "MppgNotSetUpError",
    "MppgProtocolError",
    "MppgServerError",
    "MppgUnavailableError",
    "error_for",
]
