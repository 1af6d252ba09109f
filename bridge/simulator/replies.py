"""What the simulated reader answers with: statuses, property paths and small builders.

Simulator choices for statuses PROTOCOL.md leaves unconfirmed (§3.3): unknown command
``80 01 01 13``, bad payload or non-request ``80 01 01 02``, unknown property ``80 02 01 02``,
cancel without a transaction ``80 02 03 04``, start while running ``80 02 03 08``.
"""

from __future__ import annotations

from typing import Final

from bridge.mms import MessageType, decode_tlvs
from bridge.simulator.cards import CardKind

CARD_ORDER: Final[tuple[CardKind, ...]] = ("insert", "tap", "swipe")
_KIND_OF_TAG: Final[dict[str, CardKind]] = {"81": "swipe", "82": "insert", "83": "tap"}

SERIAL_PATH: Final = (2, 2, 1, 1, 1, 1)
FIRMWARE_PATH: Final = (2, 1, 2, 2, 2, 2)
CAPABILITIES_PATH: Final = (2, 2, 1, 1, 1, 2)
HARDWARE_PATH: Final = (2, 2, 1, 1, 1, 3)
USER_EVENTS_PATH: Final = (1, 2, 7, 1, 2, 1)
WEBSOCKET_CONNECTIONS_PATH: Final = (1, 2, 2, 1, 1, 10)  # seed 004: 1..4 clients

OK: Final = (0x00, 0x000000)
STARTED: Final = (0x01, 0x000000)
UNKNOWN_COMMAND: Final = (0x80, 0x010113)
BAD_PAYLOAD: Final = (0x80, 0x010102)
UNKNOWN_PROPERTY: Final = (0x80, 0x020102)
NO_TRANSACTION: Final = (0x80, 0x020304)
TRANSACTION_RUNNING: Final = (0x80, 0x020308)


def padded(text: str, size: int) -> bytes:
    return text.encode()[:size].ljust(size, b"\x00")


def reader_kinds(options: bytes | None) -> tuple[CardKind, ...]:
    """The card kinds a Start Transaction allows: A3 ``81`` MSR, ``82`` contact, ``83``
    contactless, each ``00`` = off (§3.6); no A3 allows all three."""
    if options is None:
        return ("insert", "tap", "swipe")
    on = {_KIND_OF_TAG[t.tag_hex] for t in decode_tlvs(options)
          if t.tag_hex in _KIND_OF_TAG and t.value and t.value[0]}
    return tuple(k for k in CARD_ORDER if k in on)


def file_message(ref: int, size: int) -> bytes:
    """A device file message (type 84, 81 of 8 bytes) carrying ``size`` payload bytes."""
    data = bytes(i & 0xFF for i in range(size))
    info = bytes((MessageType.DEVICE_FILE, ref)) + bytes.fromhex("D821") + bytes.fromhex(
        "D8010000")
    body = b"\x81\x08" + info + b"\x84\x83" + (len(data) + 2).to_bytes(3, "big") + b"\xd8\x21"
    return b"\xaa\x00" + body + data


__all__ = [
    "BAD_PAYLOAD", "CAPABILITIES_PATH", "CARD_ORDER", "FIRMWARE_PATH", "HARDWARE_PATH",
    "NO_TRANSACTION", "OK", "SERIAL_PATH", "STARTED", "TRANSACTION_RUNNING", "UNKNOWN_COMMAND",
    "UNKNOWN_PROPERTY", "USER_EVENTS_PATH", "WEBSOCKET_CONNECTIONS_PATH", "file_message",
    "padded", "reader_kinds",
]
