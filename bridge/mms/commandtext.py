"""Command text as people and MQTT clients write it, turned into message bytes (PROTOCOL.md §7)."""

from __future__ import annotations

import re
from typing import Final

from bridge.mms.messages import MessageError

SENDCOMMAND_PREFIX: Final = "SENDCOMMAND,"
"""The demo scripts' verb (PROTOCOL.md §7); stripped before anything else."""

_NOT_HEX: Final = re.compile(r"[^0-9A-Fa-f]")
# MagTek's clients strip every non-hex character before sending, so ``AA:00:81``, ``AA-00``
# and ``AA,00`` work there; we accept those separators (and whitespace) but nothing else, so
# a typo is refused with a reason instead of silently becoming different bytes.
_SEPARATORS: Final = re.compile(r"[\s:,\-]+")
_PUNCTUATION: Final = re.compile(r"[:,\-]")


def normalize_command_hex(text: str) -> bytes:
    """Turn command text into message bytes.

    Accepts hex in any case, optionally prefixed by ``SENDCOMMAND,`` (any case), with
    whitespace anywhere and ``:``, ``-`` or ``,`` between bytes. The prefix is stripped
    first: its letters A, C, D, E are hex digits and would otherwise survive as garbage
    (PROTOCOL.md §7).

    Raises:
        MessageError: reason ``empty``, ``not_hex`` (offset = index in the text with the
            separators removed; also a ``:``/``-``/``,`` that splits a byte) or
            ``odd_length``.
    """
    stripped = text.strip()
    if stripped[: len(SENDCOMMAND_PREFIX)].upper() == SENDCOMMAND_PREFIX:
        stripped = stripped[len(SENDCOMMAND_PREFIX) :]
    parts: list[str] = []
    digits = 0
    position = 0
    for separator in _SEPARATORS.finditer(stripped):
        piece = stripped[position:separator.start()]
        parts.append(piece)
        digits += len(piece)
        position = separator.end()
        mark = _PUNCTUATION.search(separator.group())
        if mark is not None and digits % 2:
            raise MessageError(f"separator {mark.group()!r} splits a byte", reason="not_hex",
                               offset=digits)
    parts.append(stripped[position:])
    cleaned = "".join(parts)
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
