"""BER-style TLV codec for MMS messages (PROTOCOL.md §3.5).

Decoding is flat: :func:`decode_tlvs` reads one level of TLVs in a single pass, and nested
values are decoded on demand through :meth:`Tlv.children` or :func:`walk`. Every walk is
capped at :data:`MAX_NESTING_DEPTH` levels, so hostile input cannot recurse without bound.

Encoding is byte-exact: a decoded ``Tlv`` remembers which length form it was written in
(the device writes ``84 82 00 1C`` for 28 bytes, PROTOCOL.md §3.4), so ``encode_tlvs(
decode_tlvs(data)) == data`` for every input that decodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from bridge.errors import ProtocolError

MAX_TAG_BYTES: Final = 4
"""Longest tag we accept: ``DFDFDF37`` in the ARQC blob is 4 bytes (PROTOCOL.md §3.5)."""

MAX_LENGTH_FORM: Final = 3
"""Longest length form: ``83 LL LL LL`` (PROTOCOL.md §3.5); ``84``+ and ``80`` are refused."""

MAX_VALUE_LENGTH: Final = 0xFFFFFF
"""Largest value the ``83`` form can describe."""

MAX_NESTING_DEPTH: Final = 16
"""Deepest nesting :func:`walk` follows. The deepest real structure is the ARQC blob
(F9 > FA > 70 > FF42/F8 > ..., 5 levels, PROTOCOL.md §5), so 16 leaves ample room while
bounding the work a crafted message can cause."""

_MULTI_BYTE_TAG: Final = 0x1F
_MORE_TAG_BYTES: Final = 0x80
_CONSTRUCTED: Final = 0x20
_SHORT_LENGTH_LIMIT: Final = 0x80
_LONG_FORM_BASE: Final = 0x80


class TlvError(ProtocolError, ValueError):
    """Malformed TLV bytes. ``offset`` is the index of the faulty field in the input.

    Reasons: ``truncated_tag``, ``tag_too_long``, ``empty_tag``, ``truncated_length``,
    ``bad_length``, ``length_past_end``, ``too_deep``, ``bad_argument``.
    """


@dataclass(frozen=True, slots=True)
class Tlv:
    """One tag-length-value item.

    Attributes:
        tag: the raw tag bytes, 1 to 4 of them (``b"\\x9f\\x02"``).
        value: the value bytes.
        length_form: 0 writes the shortest length form; 1, 2 or 3 write ``81``/``82``/``83``
            followed by that many length bytes, even where a shorter form would do.
    """

    tag: bytes
    value: bytes
    length_form: int = 0

    def __post_init__(self) -> None:
        # Building a bad item is a programming error, but it must still fail loudly and
        # with our error type rather than produce bytes no decoder accepts.
        try:
            well_formed = _tag_end(self.tag, 0) == len(self.tag)
        except TlvError:
            well_formed = False
        if not well_formed:
            raise TlvError(f"not a single well-formed tag: {self.tag.hex()}", reason="bad_argument")
        if not 0 <= self.length_form <= MAX_LENGTH_FORM:
            raise TlvError(f"length_form must be 0..3, not {self.length_form}",
                           reason="bad_argument")
        limit = MAX_VALUE_LENGTH if self.length_form == 0 else (1 << (8 * self.length_form)) - 1
        if len(self.value) > limit:
            raise TlvError(
                f"value of {len(self.value)} bytes does not fit length form {self.length_form}",
                reason="bad_argument",
            )

    @property
    def constructed(self) -> bool:
        """Whether bit 0x20 of the first tag byte is set (the value holds TLVs)."""
        return bool(self.tag[0] & _CONSTRUCTED)

    @property
    def tag_hex(self) -> str:
        """The tag as upper-case hex, e.g. ``"9F02"``."""
        return self.tag.hex().upper()

    def children(self) -> list[Tlv]:
        """Decode the value as a list of TLVs (one level).

        Works on any tag: constructed ones, and the primitive ``84``/``86``/``89`` that hold
        TLVs by convention (PROTOCOL.md §3.5). For ``84`` skip the 2-byte id echo first.

        Raises:
            TlvError: the value is not a TLV list; ``offset`` is relative to the value.
        """
        return decode_tlvs(self.value)

    def encode(self) -> bytes:
        """The item's bytes, in the length form it was decoded or built with."""
        return self.tag + _encode_length(len(self.value), self.length_form) + self.value


def decode_tlvs(data: bytes, *, offset: int = 0, allow_padding: bool = False) -> list[Tlv]:
    """Decode ``data[offset:]`` as a flat sequence of TLVs.

    Args:
        data: the bytes.
        offset: where to start; error offsets stay absolute indexes into ``data``.
        allow_padding: stop quietly at a run of ``00`` bytes that lasts to the end (HID and
            cipher padding); without it a ``00`` tag byte is an ``empty_tag`` error.

    Returns:
        The items in order. Each ``length_form`` is 0 when the shortest form was used.

    Raises:
        TlvError: truncated or malformed input, with the offset of the faulty tag or length.
    """
    items: list[Tlv] = []
    pos = offset
    end = len(data)
    view = memoryview(data)
    while pos < end:
        if data[pos] == 0 and allow_padding and not any(view[pos:]):
            break
        tag_end = _tag_end(data, pos)
        length, length_form, value_start = _decode_length(data, tag_end)
        value_end = value_start + length
        if value_end > end:
            raise TlvError(
                f"length {length} runs {value_end - end} bytes past the end",
                reason="length_past_end",
                offset=tag_end,
            )
        items.append(Tlv(bytes(view[pos:tag_end]), bytes(view[value_start:value_end]), length_form))
        pos = value_end
    return items


def encode_tlvs(items: Iterable[Tlv]) -> bytes:
    """Concatenate the encodings of ``items``."""
    return b"".join(item.encode() for item in items)


def tlv(tag: bytes | int | str, value: bytes, *, length_form: int = 0) -> Tlv:
    """Build a ``Tlv`` from a tag given as bytes, an int (``0x9F02``) or hex (``"9F02"``).

    Raises:
        TlvError: the tag is not one well-formed tag or the value does not fit the form.
    """
    return Tlv(tag_bytes(tag), bytes(value), length_form)


def tag_bytes(tag: bytes | int | str) -> bytes:
    """Normalise a tag given as bytes, int or hex text to raw bytes (not validated)."""
    if isinstance(tag, bytes):
        return tag
    if isinstance(tag, int):
        if tag < 0:
            raise TlvError(f"negative tag {tag}", reason="bad_argument")
        return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")
    try:
        return bytes.fromhex(tag)
    except ValueError as exc:
        raise TlvError(f"tag {tag!r} is not hex", reason="bad_argument") from exc


def walk(items: Iterable[Tlv], *, max_depth: int = MAX_NESTING_DEPTH) -> Iterator[tuple[int, Tlv]]:
    """Yield ``(depth, item)`` depth-first, descending into constructed tags only.

    Raises:
        TlvError: a constructed value does not decode, or nesting exceeds ``max_depth``.
    """
    # An explicit stack instead of recursion: the depth cap is ours, not the interpreter's.
    stack: list[Iterator[Tlv]] = [iter(items)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        depth = len(stack) - 1
        yield depth, item
        if item.constructed:
            if depth + 1 >= max_depth:
                raise TlvError(f"nesting deeper than {max_depth} levels", reason="too_deep")
            stack.append(iter(item.children()))


def find_tag(items: Iterable[Tlv], tag: bytes | int | str) -> Tlv | None:
    """The first item with ``tag``, searching depth-first through constructed tags.

    Primitive containers (``84``, ``86``, ``89``) are not entered (PROTOCOL.md §3.5).

    Raises:
        TlvError: a constructed value on the way does not decode, or nests too deep.
    """
    wanted = tag_bytes(tag)
    for _depth, item in walk(items):
        if item.tag == wanted:
            return item
    return None


def _tag_end(data: bytes, pos: int) -> int:
    """Index just past the tag starting at ``pos``."""
    end = len(data)
    if pos >= end:
        raise TlvError("missing tag", reason="truncated_tag", offset=pos)
    if data[pos] == 0:
        # 0x00 is BER end-of-contents; MMS never uses it as a tag, only as padding.
        raise TlvError("tag byte 00 (padding or end-of-contents)", reason="empty_tag", offset=pos)
    cursor = pos + 1
    if data[pos] & _MULTI_BYTE_TAG == _MULTI_BYTE_TAG:
        while True:
            if cursor >= end:
                raise TlvError("multi-byte tag cut short", reason="truncated_tag", offset=pos)
            more = data[cursor] & _MORE_TAG_BYTES
            cursor += 1
            if cursor - pos > MAX_TAG_BYTES:
                raise TlvError("tag longer than 4 bytes", reason="tag_too_long", offset=pos)
            if not more:
                break
    return cursor


def _decode_length(data: bytes, pos: int) -> tuple[int, int, int]:
    """Decode the length at ``pos``: returns (length, length_form, value_start)."""
    if pos >= len(data):
        raise TlvError("missing length", reason="truncated_length", offset=pos)
    first = data[pos]
    if first < _SHORT_LENGTH_LIMIT:
        return first, 0, pos + 1
    count = first - _LONG_FORM_BASE
    if not 1 <= count <= MAX_LENGTH_FORM:
        # 0x80 is BER's indefinite length; 0x84+ would allow absurd sizes. Neither is MMS.
        raise TlvError(f"unsupported length byte {first:02X}", reason="bad_length", offset=pos)
    if pos + 1 + count > len(data):
        raise TlvError("long-form length cut short", reason="truncated_length", offset=pos)
    length = int.from_bytes(data[pos + 1 : pos + 1 + count], "big")
    form = 0 if count == _shortest_form(length) else count
    return length, form, pos + 1 + count


def _shortest_form(length: int) -> int:
    if length < _SHORT_LENGTH_LIMIT:
        return 0
    return (length.bit_length() + 7) // 8


def _encode_length(length: int, form: int) -> bytes:
    count = form or _shortest_form(length)
    if count == 0:
        return bytes((length,))
    return bytes((_LONG_FORM_BASE + count,)) + length.to_bytes(count, "big")


__all__ = [
    "MAX_LENGTH_FORM",
    "MAX_NESTING_DEPTH",
    "MAX_TAG_BYTES",
    "MAX_VALUE_LENGTH",
    "Tlv",
    "TlvError",
    "decode_tlvs",
    "encode_tlvs",
    "find_tag",
    "tag_bytes",
    "tlv",
    "walk",
]
