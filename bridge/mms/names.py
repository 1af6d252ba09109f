"""Human-readable names for MMS ids and codes (PROTOCOL.md §3.3, §3.6, §3.7, §5).

Pure lookup tables. Unknown values get a neutral ``"unknown ..."`` name, never an error:
these names only ever decorate output.
"""

from __future__ import annotations

from typing import Final

COMMAND_NAMES: Final[dict[int, str]] = {
    0x1001: "Start Transaction",
    0x1004: "Resume Transaction",
    0x1008: "Cancel Transaction",
    0x1803: "Display Message",
    0x1804: "Read Barcode",
    0x1805: "Buzzer",
    0x1822: "Show QR Code",
    0x1840: "Card Emulation",
    0x1F01: "Reset Device",
    0x1F02: "Set Notification Subscriptions",
    0xD101: "Get Property",
    0xD111: "Set Property",
    0xD821: "Start Get File",
}
"""Command ids (PROTOCOL.md §3.6, §3.7, §5 for 1004)."""

NOTIFICATION_NAMES: Final[dict[int, str]] = {
    0x0101: "Transaction Information Update",
    0x0103: "Transaction Host Action Request",
    0x0105: "Transaction Operation Complete",
    0x0201: "Banking Information Update",
    0x0205: "Banking Operation Complete",
    0x0905: "Firmware Update Successful",
    0x0906: "Firmware Update Failed",
    0x0907: "Firmware Up To Date",
    0x1001: "Device Information Update",
    0x1801: "UI Information Update",
    0x1803: "UI Host Action Request",
    0x1805: "UI Operation Complete",
}
"""Notification ids (PROTOCOL.md §5 table)."""

SUMMARY_NAMES: Final[dict[int, str]] = {
    0x00: "OK, done",
    0x01: "OK, started",
    0x40: "OK with warnings",
    0x41: "OK, started with warnings",
    0x80: "failed to start",
    0x81: "failed operation",
}
"""Operation status summary byte (PROTOCOL.md §3.3)."""

_DETAILS: Final[dict[int, str]] = {
    0x000000: "all good",
    0x000002: "requested operation failed",
    0x010101: "message handler: generic failure",
    0x010102: "message handler: bad message parameter",
    0x010109: "device offline",
    0x010110: "PIN key not mapped",
    0x010113: "feature not available",
    0x020101: "request handler: generic failure",
    0x020102: "request handler: bad message parameter",
    0x020103: "response payload too large",
    0x020107: "internal firmware failure",
    0x02010A: "image failure",
    0x020119: "key does not exist",
    0x02011A: "not secured",
    0x02011B: "passcode validation failed",
    0x02011C: "device locked",
    0x020304: "device state: no transaction",
    0x020305: "device state: cannot cancel",
    0x020308: "device state: transaction in progress",
    0x020311: "barcode read in progress",
    0x020312: "pass-through not activated",
    0x020314: "UI settings in progress",
    0x020315: "buzzer in progress",
    0x020316: "low battery (5 % or less)",
    0x020413: "barcode reader hardware not found",
}

# Ranges the manual names only as a group (PROTOCOL.md §3.3).
_DETAIL_RANGES: Final[tuple[tuple[int, int, str], ...]] = (
    (0x000010, 0x000018, "RTC, key generation, tamper or soft-AP error"),
    (0x02030C, 0x02030F, "signature, transaction-state or PIN-state error"),
    (0x020501, 0x020538, "TR-31 / key-management error"),
)

PAYMENT_TECHNOLOGY_NAMES: Final[dict[int, str]] = {
    0x00: "none",
    0x07: "manual entry",
    0x08: "MSR",
    0x10: "EMV contact",
    0x20: "EMV contactless",
    0x30: "barcode",
}
"""First detail byte of 0101/0105 notifications (PROTOCOL.md §5)."""

# (mask, value, name): the first entry with detail & mask == value wins, so exact codes are
# listed before the wildcard forms (PT = any payment technology, xx/nn = any byte).
_PT: Final = 0x00FFFFFF
_ANY_LAST: Final = 0xFFFFFF00
_EXACT: Final = 0xFFFFFFFF
_NOTIFICATION_DETAILS: Final[dict[int, tuple[tuple[int, int, str], ...]]] = {
    0x0101: (
        (_EXACT, 0x08010100, "MSR swiped"),
        (_EXACT, 0x08010400, "MSR detected"),
        (_EXACT, 0x10010200, "contact card inserted"),
        (_EXACT, 0x10010300, "contact card removed"),
        (_EXACT, 0x10010400, "contact card detected"),
        (_EXACT, 0x20010400, "contactless EMV card detected"),
        (_ANY_LAST, 0x20010400, "contactless MIFARE card detected"),
        (_EXACT, 0x20010500, "contactless collision"),
        (_EXACT, 0x20011002, "Apple VAS error"),
        (_EXACT, 0x20080402, "NFC UID attached"),
        (_EXACT, 0x20080702, "GPO response"),
        (_EXACT, 0x30010100, "barcode read"),
        (_EXACT, 0x30080002, "barcode data attached"),
        (0xFFFFFFF0, 0x00100100, "transaction started by device"),
        (_EXACT, 0x00100200, "transaction cancelled"),
        (_PT, 0x00020601, "PIN pad error"),
        (_PT, 0x00020602, "PIN block error"),
        (_PT, 0x00080202, "ARQC data attached"),
        (_PT, 0x00080302, "batch data attached"),
    ),
    0x0105: (
        (_EXACT, 0x00010000, "timed out / no card"),
        (_EXACT, 0x00030100, "cancelled by host"),
        (_EXACT, 0x00030200, "cancelled by user"),
        (_EXACT, 0x10020803, "ICC failed, MSR fallback"),
        (_EXACT, 0x10020903, "empty candidate list, MSR fallback"),
        (_EXACT, 0x10020002, "technical fallback"),
        (_EXACT, 0x10040700, "ICC transaction completed, declined"),
        (_EXACT, 0x20050000, "NFC tag removed"),
        (_PT, 0x00020601, "approved, signature requested"),
        (_PT, 0x00020605, "approved, signature captured"),
        (_PT, 0x00020606, "approved, signature failed"),
        (_PT & _ANY_LAST, 0x00020600, "approved"),
        (_PT & _ANY_LAST, 0x00020700, "Quick Chip deferred"),
        (_PT & _ANY_LAST, 0x00028000, "declined"),
        (_PT, 0x00020200, "offline approved"),
        (_PT, 0x00020300, "offline declined"),
        (_PT, 0x00020400, "offline failed"),
        (_PT, 0x00020500, "offline not accepted"),
        (_PT, 0x00020E00, "online request"),
    ),
    0x1001: (
        (_EXACT, 0x00000000, "reset occurred"),
        (_EXACT, 0x00010000, "reset soon"),
        (_ANY_LAST, 0x00020000, "low battery"),
        (_EXACT, 0x00020100, "power down imminent"),
        (_EXACT, 0x00020200, "charged"),
        (_EXACT, 0x00030000, "reset by command 1F01"),
        (0xFFFF00FF, 0x01000000, "contactless presented"),
        (0xFFFF00FF, 0x01010000, "contactless removed"),
        (_EXACT, 0x01020000, "card seated"),
        (_EXACT, 0x01030000, "card unseated"),
        (_EXACT, 0x01040000, "card swiped"),
        (_EXACT, 0x01050000, "touch press"),
        (_EXACT, 0x01060000, "touch release"),
        (_EXACT, 0x01070000, "barcode"),
        (_EXACT, 0x02000000, "session expiring"),
    ),
    0x1803: (
        (_EXACT, 0x02010000, "clear display"),
        (_EXACT, 0x02010100, "show message"),
        (_EXACT, 0x02010200, "show message with cancel"),
        (_EXACT, 0x02020000, "cardholder selection"),
    ),
    0x1805: (
        (_EXACT, 0x05040100, "buzzer done"),
        (_EXACT, 0x05040200, "buzzer failed"),
        (_EXACT, 0x04030100, "barcode read"),
        (_EXACT, 0x02010000, "display timed out"),
        (_EXACT, 0x01010101, "signature ready"),
        (_EXACT, 0x06050100, "card emulation done"),
    ),
}

# Notifications whose first detail byte names the payment technology (PROTOCOL.md §5).
_PT_NOTIFICATIONS: Final = frozenset({0x0101, 0x0105})


def command_name(command_id: int) -> str:
    """The name of a command id, e.g. ``"Get Property"`` for 0xD101."""
    return COMMAND_NAMES.get(command_id, f"unknown command {command_id:04X}")


def notification_name(notification_id: int) -> str:
    """The name of a notification id, e.g. ``"Device Information Update"`` for 0x1001."""
    return NOTIFICATION_NAMES.get(notification_id, f"unknown notification {notification_id:04X}")


def summary_name(summary: int) -> str:
    """The name of an operation status summary byte."""
    return SUMMARY_NAMES.get(summary, f"unknown summary {summary:02X}")


def detail_name(detail: int) -> str:
    """The name of a 3-byte operation status detail code (group, subgroup, code)."""
    name = _DETAILS.get(detail)
    if name is not None:
        return name
    for low, high, range_name in _DETAIL_RANGES:
        if low <= detail <= high:
            return range_name
    return f"unknown detail {detail:06X}"


def notification_detail_name(notification_id: int, detail: bytes) -> str:
    """The meaning of a notification's 4 detail bytes (tag 82), as far as PROTOCOL.md §5 knows.

    For 0101/0105 the payment technology is appended, e.g.
    ``"ARQC data attached (EMV contactless)"``.
    """
    if len(detail) != 4:
        return "malformed detail"
    code = int.from_bytes(detail, "big")
    for mask, value, name in _NOTIFICATION_DETAILS.get(notification_id, ()):
        if code & mask == value:
            if notification_id in _PT_NOTIFICATIONS and mask in (_PT, _PT & _ANY_LAST):
                technology = PAYMENT_TECHNOLOGY_NAMES.get(detail[0], f"technology {detail[0]:02X}")
                return f"{name} ({technology})"
            return name
    return f"unknown detail {detail.hex().upper()}"


__all__ = [
    "COMMAND_NAMES",
    "NOTIFICATION_NAMES",
    "PAYMENT_TECHNOLOGY_NAMES",
    "SUMMARY_NAMES",
    "command_name",
    "detail_name",
    "notification_detail_name",
    "notification_name",
    "summary_name",
]
