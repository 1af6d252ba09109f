"""Builders for the host commands we send, and the example commands of PROTOCOL.md.

Every builder returns whole message bytes ready for :func:`bridge.mms.packets.packetize`.
With their default arguments they reproduce the PROTOCOL.md examples byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from bridge.mms.messages import Message, MessageError, build_request
from bridge.mms.properties import (
    GET_PROPERTY,
    MAIN_FIRMWARE,
    SERIAL_NUMBER,
    SET_PROPERTY,
    USER_EVENT_CONTROLS,
    WEBSOCKET_CONNECTIONS,
    PathForm,
    property_tlvs,
    read_property,
)
from bridge.mms.tlv import Tlv, encode_tlvs

START_TRANSACTION: Final = 0x1001
CANCEL_TRANSACTION: Final = 0x1008
RESET_DEVICE: Final = 0x1F01
BUZZER: Final = 0x1805
SHOW_QR_CODE: Final = 0x1822

SERIAL_HEX_DIGITS: Final = 7
"""The serial is the first 7 hex digits of the 4-byte property value (PROTOCOL.md §4)."""

SERIAL_VALUE_LENGTH: Final = 4
MAX_AMOUNT_CENTS: Final = 999_999_999_999
"""9F02 is 6 bytes of BCD: 12 digits (PROTOCOL.md §3.6)."""

MAX_TONES: Final = 10
"""The buzzer takes 1..10 tones (PROTOCOL.md §3.7)."""

TRANSACTION_OPTIONS: Final = 0x0003
"""Quick Chip + DynaPro response format, the manual's default (PROTOCOL.md §3.6)."""

# Show QR Code display options copied from the PROTOCOL.md §2.1 example (tags 83-88 of
# manual Table 138); only the data, prompt and timeout vary here.
_QR_OPTIONS: Final = bytes.fromhex("830100" "8401FF" "850101" "860128" "8703000000" "8803FFFFFF")


def get_property(path: str | Sequence[int], ref: int = 0, *, form: PathForm = "nested",
                 oid: bool = True) -> bytes:
    """A D101 Get Property request for ``path`` (PROTOCOL.md §3.7)."""
    return build_request(GET_PROPERTY, property_tlvs(path, form=form, oid=oid), ref)


def set_property(path: str | Sequence[int], value: bytes, ref: int = 0, *, form: PathForm = "87",
                 oid: bool = False) -> bytes:
    """A D111 Set Property request writing ``value`` at ``path`` (PROTOCOL.md §3.7)."""
    return build_request(SET_PROPERTY, property_tlvs(path, value, form=form, oid=oid), ref)


def get_serial_number(ref: int = 0xB5) -> bytes:
    """Read 2.2.1.1.1.1 in the ``87`` form, as the MQTT device client does (§4 path A)."""
    return get_property(SERIAL_NUMBER, ref, form="87")


def get_serial_number_nested(ref: int = 0x00) -> bytes:
    """Read 2.2.1.1.1.1 in the nested E-form, as the device classes do (§4 path B)."""
    return get_property(SERIAL_NUMBER, ref, form="nested")


def get_firmware_id(ref: int = 0x02) -> bytes:
    """Read 2.1.2.2.2.2 Main Firmware Version in the nested form (PROTOCOL.md §4)."""
    return get_property(MAIN_FIRMWARE, ref, form="nested")


def cancel_transaction(ref: int = 0x13) -> bytes:
    """1008 Cancel Transaction (PROTOCOL.md §3.6)."""
    return build_request(CANCEL_TRANSACTION, b"", ref)


def reset_device(ref: int = 0x12) -> bytes:
    """1F01 Reset Device (PROTOCOL.md §3.6)."""
    return build_request(RESET_DEVICE, b"", ref)


def set_user_events(mask: int = 0x9F000000, ref: int = 0x55) -> bytes:
    """Set 1.2.7.1.2.1 User Event Notification Controls (all events + barcode by default)."""
    return set_property(USER_EVENT_CONTROLS, mask.to_bytes(4, "big"), ref)


def start_transaction(
    ref: int = 0,
    *,
    amount_cents: int = 100,
    timeout_s: int = 60,
    msr: bool = True,
    contact: bool = True,
    contactless: bool = True,
    currency: int | None = None,
    options: int = TRANSACTION_OPTIONS,
) -> bytes:
    """1001 Start Transaction (PROTOCOL.md §3.6): a purchase of ``amount_cents``.

    Args:
        ref: reference number.
        amount_cents: 9F02, in minor units (BCD, 12 digits).
        timeout_s: tag 82, 0 = none, at most 255.
        msr: enable the magnetic stripe reader (EMV mode).
        contact: enable the contact chip reader.
        contactless: enable the contactless reader (EMV mode).
        currency: ISO 4217 numeric code for 5F2A (840 = USD); None leaves it out.
        options: the 2 transaction option bytes (tag 84).

    Raises:
        MessageError: an argument out of range (``bad_argument``).
    """
    if not 0 <= amount_cents <= MAX_AMOUNT_CENTS:
        raise MessageError(f"amount {amount_cents} does not fit 12 BCD digits",
                           reason="bad_argument")
    if not 0 <= timeout_s <= 0xFF or not 0 <= options <= 0xFFFF:
        raise MessageError("timeout or options out of range", reason="bad_argument")
    if currency is not None and not 0 <= currency <= 9999:
        raise MessageError(f"currency {currency} is not 4 BCD digits", reason="bad_argument")
    readers = encode_tlvs([
        Tlv(b"\x81", bytes((int(msr),))),
        Tlv(b"\x82", bytes((int(contact),))),
        Tlv(b"\x83", bytes((int(contactless),))),
    ])
    emv = [
        Tlv(b"\x9c", b"\x00"),  # transaction type: purchase
        Tlv(b"\x9f\x02", _bcd(amount_cents, 6)),
        Tlv(b"\x9f\x03", bytes(6)),  # amount other: 0
    ]
    if currency is not None:
        emv.append(Tlv(b"\x5f\x2a", _bcd(currency, 2)))
    payload = encode_tlvs([
        Tlv(b"\x82", bytes((timeout_s,))),
        Tlv(b"\xa3", readers),
        Tlv(b"\x84", options.to_bytes(2, "big")),
        Tlv(b"\x86", encode_tlvs(emv)),
    ])
    return build_request(START_TRANSACTION, payload, ref)


def show_qr_code(data: bytes, prompt: bytes, ref: int = 0x05, *, timeout_s: int = 60) -> bytes:
    """1822 Show QR Code on display devices; the layout of the PROTOCOL.md §2.1 example."""
    if not 0 <= timeout_s <= 0xFF:
        raise MessageError(f"timeout {timeout_s} is not one byte", reason="bad_argument")
    payload = (Tlv(b"\x81", bytes((timeout_s,))).encode() + Tlv(b"\x82", data).encode()
               + _QR_OPTIONS + Tlv(b"\x89", prompt).encode())
    return build_request(SHOW_QR_CODE, payload, ref)


def buzzer(tones: Sequence[tuple[int, int]] = ((2000, 200),), ref: int = 0) -> bytes:
    """1805 Buzzer: ``(frequency Hz, duration ms)`` per tone, 1..10 tones (PROTOCOL.md §3.7)."""
    if not 1 <= len(tones) <= MAX_TONES or any(
            not (0 <= f <= 0xFFFF and 0 <= d <= 0xFFFF) for f, d in tones):
        raise MessageError("1..10 tones of 2-byte frequency and duration", reason="bad_argument")
    value = b"".join(f.to_bytes(2, "big") + d.to_bytes(2, "big") for f, d in tones)
    return build_request(BUZZER, Tlv(b"\x81", value).encode(), ref)


def parse_serial_number(msg: Message) -> str:
    """The 7-digit serial from a serial-number property response, either form (PROTOCOL.md §4).

    Raises:
        MessageError: no property value, or one shorter than 4 bytes (``bad_serial``).
    """
    value = read_property(msg).value
    if len(value) < SERIAL_VALUE_LENGTH:
        raise MessageError(f"serial value of {len(value)} bytes, expected 4", reason="bad_serial")
    return value.hex().upper()[:SERIAL_HEX_DIGITS]


def parse_firmware_id(msg: Message) -> str:
    """The firmware id string from a firmware property response: ASCII, NULs removed.

    Raises:
        MessageError: no property value, or one that is not ASCII (``bad_firmware_id``).
    """
    value = read_property(msg).value.replace(b"\x00", b"")
    try:
        return value.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MessageError("firmware id is not ASCII", reason="bad_firmware_id") from exc


def _bcd(number: int, size: int) -> bytes:
    return bytes.fromhex(f"{number:0{2 * size}d}")


EXAMPLES: Final[dict[str, bytes]] = {
    "get_serial": get_serial_number(),
    "get_serial_nested": get_serial_number_nested(),
    "get_firmware_id": get_firmware_id(),
    "start_emv": start_transaction(),
    # Constructed (PROTOCOL.md §8 step 2 quotes only the TLVs): contactless only, 10 s,
    # $1.00 in USD, wrapped in a full request with ref 00.
    "start_contactless": start_transaction(timeout_s=10, msr=False, contact=False, currency=840),
    "cancel": cancel_transaction(),
    "reset": reset_device(),
    "set_user_events": set_user_events(),
    "set_websocket_connections": set_property(WEBSOCKET_CONNECTIONS, b"\x01", 0x55),
    "show_qr": show_qr_code(
        b"https://example.com/receipt/" + b"0" * 60 + b"1", b"Please scan QR code"),
}
"""The example commands of PROTOCOL.md (§2.1, §3.6, §3.7, §4, §7, §8) by name."""

_ALIASES: Final[dict[str, str]] = {
    # The demo script verbs of PROTOCOL.md §7 that stand for a fixed command.
    "getdevicesn": "get_serial",
    "getfirmwareid": "get_firmware_id",
    "pcireset": "reset",
}


def command_by_name(name: str) -> bytes:
    """An example command by name, case-insensitive (``-`` and ``_`` alike).

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    try:
        return EXAMPLES[key]
    except KeyError:
        known = ", ".join(sorted([*EXAMPLES, *_ALIASES]))
        raise KeyError(f"unknown command {name!r}; known: {known}") from None


__all__ = [
    "EXAMPLES",
    "buzzer",
    "cancel_transaction",
    "command_by_name",
    "get_firmware_id",
    "get_property",
    "get_serial_number",
    "get_serial_number_nested",
    "parse_firmware_id",
    "parse_serial_number",
    "reset_device",
    "set_property",
    "set_user_events",
    "show_qr_code",
    "start_transaction",
]
