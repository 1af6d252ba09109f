"""Command text as people and MQTT clients write it, turned into message bytes (PROTOCOL.md §7)."""

from __future__ import annotations

import re
from typing import Final

from bridge.mms.messages import MessageError

SENDCOMMAND_PREFIX: Final = "SENDCOMMAND,"
"""The demo scripts' verb (PROTOCOL.md §7); stripped before anything else."""

_NOT_HEX: Final = re.compile(r"[^0-9A-Fa-f]")
_WHITESPACE: Final = re.compile(r"\s+")


def normalize_command_hex(text: str) -> bytes:
    """Turn command text into message bytes.

    Accepts hex in any case with any whitespace, optionally prefixed by ``SENDCOMMAND,``
    (any case). The prefix is stripped first: its letters A, C, D, E are hex digits and
    would otherwise survive as garbage (PROTOCOL.md §7).

    Raises:
        MessageError: reason ``empty``, ``not_hex`` (offset = index in the cleaned text) or
            ``odd_length``.
    """
    stripped = text.strip()
    if stripped[: len(SENDCOMMAND_PREFIX)].upper() == SENDCOMMAND_PREFIX:
        stripped = stripped[len(SENDCOMMAND_PREFIX) :]
    cleaned = _WHITESPACE.sub("", stripped)
    if not cleaned:
        raise MessageError("no hex digits", reason="empty")
    bad = _NOT_HEX.search(cleaned)
    if bad is not None:
        raise MessageError(f"character {bad.group()!r} is not hex", reason="not_hex",
                           offset=bad.start())
    if len(cleaned) % 2:
        raise MessageError(f"{len(cleaned)} hex digits is an odd number", reason="odd_length")
    return bytes.fromhex(cleaned)


__all__ = ["SENDCOMMAND_PREFIX", "normalize_command_hex"]
