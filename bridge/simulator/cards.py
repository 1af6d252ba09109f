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


def card_flow(kind: CardKind, serial: str, *, removed: bool = True) -> list[bytes]:
    """The notifications a no-display reader sends for one card (Quick Chip, §5 steps 2-4).

    ``removed=False`` leaves an inserted card in the slot (its removal comes later, by hand).
    """
    pt = _PT[kind]
    arqc = data_notification(pt, 0x02, serial)
    batch = data_notification(pt, 0x03, serial, extra=tlv("DF8129", bytes(_BATCH_FILLER)).encode())
    done = _event(0x0105, f"{pt:02X}020700")  # Quick Chip deferred
    if kind == "tap":
        return [_event(0x0101, "20010400"), arqc, done, batch]
    if kind == "insert":
        flow = [_event(0x0101, "10010200"), arqc, done, prompt("REMOVE CARD"), batch]
        return [*flow, card_removed()] if removed else flow
    return [_event(0x0101, "08010100"), arqc, done, batch]


def card_removed() -> bytes:
    """0101 ``10010300``: the inserted card left the slot."""
    return _event(0x0101, "10010300")


# Simulator choices where PROTOCOL.md leaves the exact notifications open (§5, §3.7): a MIFARE
# Classic 1K (``200104 02``), its UID attached (``20080402``, DF79) and "NFC tag removed".
MIFARE_UID: Final = bytes.fromhex("04A1B2C3D4E5F6")


def mifare_flow() -> list[bytes]:
    """NFC MIFARE read (command 1100): detected, UID attached, tag removed."""
    uid = tlv("84", tlv("DF79", MIFARE_UID).encode(), length_form=2).encode()
    return [_event(0x0101, "20010402"),
            build_notification(0x0101, bytes.fromhex("20080402"), uid, long_payload=True),
            _event(0x0105, "20050000")]


def pin_complete() -> bytes:
    """0205 PIN entry complete (command 2001): ``F5 {DF71, 99, DFDF41, DFDF42}``, all fake.

    The layout keeps ``84 82 LLLL | 0205 | F5...`` where MagTek's reference looks (§5); the
    detail ``00000000`` is a simulator choice.
    """
    block = tlv("F5", encode_tlvs([
        tlv("DF71", b"\x00"),
        tlv("99", bytes(8)),
        tlv("DFDF41", bytes.fromhex("FFFF9876543210E00002")),
        tlv("DFDF42", b"\x80"),
    ])).encode()
    return build_notification(0x0205, bytes(4), block, long_payload=True)


def user_event(kind: CardKind, *, removed: bool = False) -> bytes | None:
    """1001 user event (category 01, §5) for a card presented or taken away while idle."""
    codes = {("tap", False): "01000000", ("tap", True): "01010000",
             ("insert", False): "01020000", ("insert", True): "01030000",
             ("swipe", False): "01040000"}
    code = codes.get((kind, removed))
    return None if code is None else _event(0x1001, code)


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


__all__ = ["MIFARE_UID", "TEST_PAN", "CardKind", "card_flow", "card_removed",
           "data_notification", "mifare_flow", "notification", "pin_complete", "prompt",
           "user_event"]
