"""HID report framing: messages to reports and back (PROTOCOL.md §2).

Every report starts with a packet-type byte: single (00), head (01), middle (02), tail (03)
or cancel (04). :func:`packetize` is the sender algorithm of PROTOCOL.md §2;
:class:`Reassembler` is the strict receiver of the §2.2 "What the bridge should do" table:
every report that cannot be used becomes a :class:`FrameDropped` event with a named reason,
and a message is only delivered when its length checks out, so a damaged stream can lose
messages but never deliver a corrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

from bridge.errors import ProtocolError

DEFAULT_REPORT_LEN: Final = 64
"""Report length of every MMS reader in both directions (PROTOCOL.md §1)."""

MIN_REPORT_LEN: Final = 6
"""Shortest report the framing works with: a head's 5 header bytes plus one data byte."""

MAX_REPORT_LEN: Final = 257
"""Longest report the framing can describe: single and tail lengths are one byte (<= 255)."""

DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20
"""Default cap on a reassembled message: 1 MiB.

The largest real message in the sources is 3,930 bytes (the "show bitmap" demo, PROTOCOL.md
§2), so 1 MiB leaves a 250-fold margin, yet stays well under the protocol maximum of about
3.8 MiB: a garbage head cannot make us hold megabytes per reader, and at one report per ms a
1 MiB message already takes 17 s to arrive.
"""

HEAD_HEADER: Final = 5  # 01 + 4-byte big-endian total (PROTOCOL.md §2)
MIDDLE_HEADER: Final = 3  # 02 + 2-byte big-endian packet number
SHORT_HEADER: Final = 2  # 00/03 + 1-byte length
CANCEL_LENGTH: Final = 3  # 04 + 2-byte reason
MAX_PACKET_NUMBER: Final = 0xFFFF


class PacketType(IntEnum):
    """Byte 0 of every report (PROTOCOL.md §2)."""

    SINGLE = 0x00
    HEAD = 0x01
    MIDDLE = 0x02
    TAIL = 0x03
    CANCEL = 0x04


class FramingError(ProtocolError, ValueError):
    """A message that cannot be framed (empty, too big) or a bad report length."""


class DropReason(StrEnum):
    """Why the reassembler discarded data (PROTOCOL.md §2.2). Values are metric labels."""

    RESTARTED = "restarted"  # a head arrived while a message was pending
    ORPHAN = "orphan"  # middle or tail with nothing pending
    SEQUENCE_ERROR = "sequence_error"  # middle number not the expected one
    CANCELLED = "cancelled"  # cancel packet (also counted with nothing pending)
    LENGTH_MISMATCH = "length_mismatch"  # bytes received disagree with the declared total
    TOO_LARGE = "too_large"  # declared total above max_message_size
    BAD_LENGTH = "bad_length"  # single/tail length 0 or above RL-2
    UNKNOWN_TYPE = "unknown_type"  # packet-type byte above 04
    SHORT_REPORT = "short_report"  # report shorter than its header says
    ABANDONED = "abandoned"  # reset() (unplug) with a message pending


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A whole message came out of the reports.

    Attributes:
        message: the message bytes, padding removed.
        nonconforming: it came as head + tail although it would fit a single packet
            (PROTOCOL.md §2.2: accepted, but worth counting).
    """

    message: bytes
    nonconforming: bool = False


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """Data was discarded.

    Attributes:
        reason: why.
        discarded_bytes: message bytes thrown away: the pending partial message plus the data
            the offending report carried, as far as its header tells (0 when it cannot).
    """

    reason: DropReason
    discarded_bytes: int


ReassemblyEvent = MessageReceived | FrameDropped


def max_message_size(report_len: int = DEFAULT_REPORT_LEN) -> int:
    """The largest message the framing can carry: head + 65535 middles + a full tail.

    3,997,756 bytes for 64-byte reports (PROTOCOL.md §2).
    """
    _check_report_len(report_len)
    return (
        (report_len - HEAD_HEADER)
        + MAX_PACKET_NUMBER * (report_len - MIDDLE_HEADER)
        + (report_len - SHORT_HEADER)
    )


def packetize(message: bytes, report_len: int = DEFAULT_REPORT_LEN) -> list[bytes]:
    """Split one message into reports of exactly ``report_len`` bytes (PROTOCOL.md §2).

    Up to RL-2 bytes go in one single packet; longer messages become a head with the 4-byte
    total and RL-5 bytes, middles numbered from 1 with RL-3 bytes each, and a tail with the
    last 1..RL-2 bytes. Single and tail are zero-padded.

    Raises:
        FramingError: the message is empty (``empty``) or larger than
            :func:`max_message_size` (``too_large``), or the report length is unusable.
    """
    capacity = max_message_size(report_len)
    size = len(message)
    if size == 0:
        raise FramingError("cannot frame an empty message", reason="empty")
    if size > capacity:
        raise FramingError(f"message of {size} bytes exceeds the framing maximum {capacity}",
                           reason="too_large")
    data = bytes(message)
    single_cap = report_len - SHORT_HEADER
    if size <= single_cap:
        return [_short_packet(PacketType.SINGLE, data, report_len)]
    head_cap = report_len - HEAD_HEADER
    middle_cap = report_len - MIDDLE_HEADER
    reports = [bytes((PacketType.HEAD,)) + size.to_bytes(4, "big") + data[:head_cap]]
    pos = head_cap
    number = 1
    while size - pos > single_cap:
        reports.append(bytes((PacketType.MIDDLE,)) + number.to_bytes(2, "big")
                       + data[pos : pos + middle_cap])
        pos += middle_cap
        number += 1
    reports.append(_short_packet(PacketType.TAIL, data[pos:], report_len))
    return reports


class Reassembler:
    """Turn HID reports back into messages, strictly (PROTOCOL.md §2.2).

    At most one message is pending. Singles never touch it, so a single packet between a head
    and its tail is delivered on its own and the pending message goes on, as the reference
    does. Bytes accumulate in one ``bytearray``: O(total) work per message.

    Args:
        report_len: the report length RL (64 for every MMS reader).
        max_message_size: the largest declared total accepted; bigger heads are dropped as
            ``too_large`` and their middles and tail then arrive as orphans.

    Raises:
        FramingError: on an unusable ``report_len`` or a non-positive ``max_message_size``.
    """

    def __init__(self, report_len: int = DEFAULT_REPORT_LEN,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        _check_report_len(report_len)
        if max_message_size < 1:
            raise FramingError(f"max_message_size must be positive, not {max_message_size}",
                               reason="bad_argument")
        self.report_len = report_len
        self.max_message_size = max_message_size
        self._buffer = bytearray()
        self._pending = False
        self._total = 0
        self._next_number = 1

    @property
    def pending(self) -> bool:
        """Whether a multi-packet message is partly received."""
        return self._pending

    def feed(self, report: bytes) -> list[ReassemblyEvent]:
        """Take one report; return what it completed or broke (often nothing).

        Never raises on report contents: every problem becomes a ``FrameDropped``.
        """
        if not report:
            return [self._drop(DropReason.SHORT_REPORT, 0)]
        kind = report[0]
        if kind == PacketType.SINGLE:
            return [self._single(report)]
        if kind == PacketType.HEAD:
            return self._head(report)
        if kind == PacketType.MIDDLE:
            dropped = self._middle(report)
            return [] if dropped is None else [dropped]
        if kind == PacketType.TAIL:
            return [self._tail(report)]
        if kind == PacketType.CANCEL:
            if len(report) < CANCEL_LENGTH:
                return [self._drop(DropReason.SHORT_REPORT, 0, pending_too=True)]
            return [self._drop(DropReason.CANCELLED, 0, pending_too=True)]
        # Unknown types leave the pending message alone, as the reference does.
        return [FrameDropped(DropReason.UNKNOWN_TYPE, 0)]

    def reset(self) -> list[ReassemblyEvent]:
        """Forget any pending message (the reader was unplugged)."""
        if not self._pending:
            return []
        return [self._drop(DropReason.ABANDONED, 0, pending_too=True)]

    def _single(self, report: bytes) -> ReassemblyEvent:
        if len(report) < SHORT_HEADER:
            return FrameDropped(DropReason.SHORT_REPORT, 0)
        size = report[1]
        available = len(report) - SHORT_HEADER
        if size == 0 or size > self.report_len - SHORT_HEADER:
            return FrameDropped(DropReason.BAD_LENGTH, min(size, available))
        if available < size:
            return FrameDropped(DropReason.SHORT_REPORT, available)
        return MessageReceived(bytes(report[SHORT_HEADER : SHORT_HEADER + size]))

    def _head(self, report: bytes) -> list[ReassemblyEvent]:
        events: list[ReassemblyEvent] = []
        if self._pending:
            events.append(self._drop(DropReason.RESTARTED, 0, pending_too=True))
        carried = self.report_len - HEAD_HEADER
        if len(report) < self.report_len:
            events.append(FrameDropped(DropReason.SHORT_REPORT, max(0, len(report) - HEAD_HEADER)))
            return events
        total = int.from_bytes(report[1:HEAD_HEADER], "big")
        if total > self.max_message_size:
            events.append(FrameDropped(DropReason.TOO_LARGE, carried))
            return events
        if total < carried:
            # A head is always full, so a total below its capacity can never add up.
            events.append(FrameDropped(DropReason.LENGTH_MISMATCH, carried))
            return events
        self._pending = True
        self._total = total
        self._next_number = 1
        self._buffer.clear()
        self._buffer += memoryview(report)[HEAD_HEADER : self.report_len]
        return events

    def _middle(self, report: bytes) -> FrameDropped | None:
        carried = self.report_len - MIDDLE_HEADER
        if not self._pending:
            return FrameDropped(DropReason.ORPHAN, carried)
        if len(report) < self.report_len:
            return self._drop(DropReason.SHORT_REPORT, max(0, len(report) - MIDDLE_HEADER),
                              pending_too=True)
        number = int.from_bytes(report[1:MIDDLE_HEADER], "big")
        if number != self._next_number:
            return self._drop(DropReason.SEQUENCE_ERROR, carried, pending_too=True)
        if len(self._buffer) + carried > self._total:
            return self._drop(DropReason.LENGTH_MISMATCH, carried, pending_too=True)
        self._buffer += memoryview(report)[MIDDLE_HEADER : self.report_len]
        self._next_number += 1
        return None

    def _tail(self, report: bytes) -> ReassemblyEvent:
        if len(report) < SHORT_HEADER:
            return self._drop(DropReason.SHORT_REPORT, 0, pending_too=True)
        size = report[1]
        available = len(report) - SHORT_HEADER
        if not self._pending:
            return FrameDropped(DropReason.ORPHAN, min(size, available))
        if size == 0 or size > self.report_len - SHORT_HEADER:
            return self._drop(DropReason.BAD_LENGTH, min(size, available), pending_too=True)
        if available < size:
            return self._drop(DropReason.SHORT_REPORT, available, pending_too=True)
        if len(self._buffer) + size != self._total:
            return self._drop(DropReason.LENGTH_MISMATCH, size, pending_too=True)
        self._buffer += memoryview(report)[SHORT_HEADER : SHORT_HEADER + size]
        message = bytes(self._buffer)
        nonconforming = self._total <= self.report_len - SHORT_HEADER
        self._forget()
        return MessageReceived(message, nonconforming)

    def _drop(self, reason: DropReason, report_bytes: int, *,
              pending_too: bool = False) -> FrameDropped:
        discarded = report_bytes
        if pending_too and self._pending:
            discarded += len(self._buffer)
            self._forget()
        return FrameDropped(reason, discarded)

    def _forget(self) -> None:
        self._pending = False
        self._total = 0
        self._next_number = 1
        # A fresh buffer rather than clear(): a completed 1 MiB message must not pin 1 MiB.
        self._buffer = bytearray()


PacketReassembler = Reassembler
"""The role name used in the style guide; the same class."""


def _short_packet(kind: PacketType, chunk: bytes, report_len: int) -> bytes:
    padding = bytes(report_len - SHORT_HEADER - len(chunk))
    return bytes((kind, len(chunk))) + chunk + padding


def _check_report_len(report_len: int) -> None:
    if not MIN_REPORT_LEN <= report_len <= MAX_REPORT_LEN:
        raise FramingError(
            f"report length {report_len} outside {MIN_REPORT_LEN}..{MAX_REPORT_LEN}",
            reason="bad_report_len",
        )


__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_REPORT_LEN",
    "MAX_REPORT_LEN",
    "MIN_REPORT_LEN",
    "DropReason",
    "FrameDropped",
    "FramingError",
    "MessageReceived",
    "PacketReassembler",
    "PacketType",
    "Reassembler",
    "ReassemblyEvent",
    "max_message_size",
    "packetize",
]
