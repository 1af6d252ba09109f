"""Fake card data and the notification sequences of a transaction (PROTOCOL.md §5).

Everything here is clearly fake: the masked Visa test PAN 4761730000000119, zero KSNs, a zero
MAC and a counting "encrypted" block. The layout is the real one, so consumers that extract
the ARQC blob the way MagTek's reference does get a well-formed blob.
"""

from __future__ import annotations

from typing import Final, Literal

from bridge.mms import build_notification, encode_tlvs, tlv

CardKind = Literal["tap", "insert", "swipe"]
TEST_PAN: Final = "4761730000000119"
_TRACK2: Final = f";{TEST_PAN}=25122010000000000000?".encode()
_PT: Final[dict[str, int]] = {"tap": 0x20, "insert": 0x10, "swipe": 0x08}
_BATCH_FILLER: Final = 384  # batch records carry EMV tag lists: a few hundred bytes


def _blob(serial: str, extra: bytes = b"") -> bytes:
    """ARQC/batch blob: 2-byte length | F9{...} | padding to 8 | 4-byte MAC (§5)."""
    secured = tlv("F8", encode_tlvs([
        tlv("DFDF59", bytes(range(16))),
        tlv("DFDF56", bytes.fromhex("FFFF9876543210E00001")),
        tlv("DFDF57", b"\x80"),
        tlv("DFDF58", b"\x00"),
    ]))
    card = tlv("70", encode_tlvs([
        tlv("DFDF53", b"\x00"),
        tlv("DFDF4D", _TRACK2),
        tlv("DFDF52", b"\x06"),
        secured,
    ]) + extra)
    body = tlv("F9", encode_tlvs([
        tlv("DFDF54", bytes(10)),
        tlv("DFDF55", b"\x82"),
        tlv("DFDF25", serial.encode()),
        tlv("FA", card.encode()),
    ])).encode()
    padding = (-len(body)) % 8
    return len(body).to_bytes(2, "big") + body + bytes(padding) + bytes(4)


def data_notification(pt: int, kind: int, serial: str, extra: bytes = b"") -> bytes:
    """0101 ``PT 08 kind 02`` with the ``84 82 LLLL | 0101 | 84 82 llll | blob`` layout."""
    inner = tlv("84", _blob(serial, extra), length_form=2).encode()
    detail = bytes((pt, 0x08, kind, 0x02))
    return build_notification(0x0101, detail, inner, long_payload=True)


def _event(notification_id: int, detail_hex: str) -> bytes:
    return build_notification(notification_id, bytes.fromhex(detail_hex))


def card_flow(kind: CardKind, serial: str) -> list[bytes]:
    """The notifications a no-display reader sends for one card (Quick Chip, §5 steps 2-4)."""
    pt = _PT[kind]
    arqc = data_notification(pt, 0x02, serial)
    batch = data_notification(pt, 0x03, serial, extra=tlv("DF8129", bytes(_BATCH_FILLER)).encode())
    done = _event(0x0105, f"{pt:02X}020700")  # Quick Chip deferred
    if kind == "tap":
        return [_event(0x0101, "20010400"), arqc, done, batch]
    if kind == "insert":
        return [_event(0x0101, "10010200"), arqc, done,
                prompt("REMOVE CARD"), batch, _event(0x0101, "10010300")]
    return [_event(0x0101, "08010100"), arqc, done, batch]


def prompt(text: str, detail_hex: str = "02010100") -> bytes:
    """1803 UI host action request: ``1803, 810100, 8201 01, 83 82 LLLL text`` (§5)."""
    payload = encode_tlvs([
        tlv("81", b"\x00"),
        tlv("82", b"\x01"),
        tlv("83", text.encode(), length_form=2),
    ])
    return build_notification(0x1803, bytes.fromhex(detail_hex), payload, long_payload=True)


def notification(notification_id: int, detail_hex: str, payload: bytes | None = None) -> bytes:
    return build_notification(notification_id, bytes.fromhex(detail_hex), payload)


__all__ = ["TEST_PAN", "CardKind", "card_flow", "data_notification", "notification", "prompt"]
