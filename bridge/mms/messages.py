"""The MMS message model: parse and build whole messages (PROTOCOL.md §3).

A message is ``AA``, a version byte, then TLVs: ``81`` message info first, then ``82``
status or notification detail, ``83``, ``84`` payload, ``9E`` (PROTOCOL.md §3.1). Parsing
keeps every top-level TLV with its length form, so :meth:`Message.encode` gives back the
exact bytes that were parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from bridge.errors import ProtocolError
from bridge.mms.names import (
    command_name,
    detail_name,
    notification_detail_name,
    notification_name,
    summary_name,
)
from bridge.mms.tlv import Tlv, TlvError, decode_tlvs, encode_tlvs

START_BYTE: Final = 0xAA
"""Every message starts with it; it is not a TLV (PROTOCOL.md §3.1)."""

MAX_VERSION: Final = 0x02
"""Highest API framework version the manual allows (00-02, PROTOCOL.md §3.1)."""

MESSAGE_INFO_TAG: Final = b"\x81"
STATUS_TAG: Final = b"\x82"
PAYLOAD_TAG: Final = b"\x84"

INFO_LENGTH: Final = 4
"""Tag 81 length for requests, responses and notifications (PROTOCOL.md §3.2)."""

FILE_INFO_LENGTH: Final = 8
"""Tag 81 length for data-file messages: 4 more bytes of file type (PROTOCOL.md §3.2)."""

STATUS_LENGTH: Final = 4
"""Tag 82 length: summary + 3-byte detail, or 4 notification detail bytes (PROTOCOL.md §3.3)."""

ID_ECHO_LENGTH: Final = 2
"""The payload starts with the 2-byte command or notification id (PROTOCOL.md §3.4)."""

_FORCED_LONG_FORM: Final = 2  # 84 82 LL LL, the device's own layout (PROTOCOL.md §3.4)
_OK_LIMIT: Final = 0x80  # summaries below 0x80 are successes (PROTOCOL.md §3.3)
_TRUNCATION_REASONS: Final = frozenset({"truncated_tag", "truncated_length", "length_past_end"})


class MessageError(ProtocolError, ValueError):
    """Bytes that are not a well-formed MMS message, or a bad argument to a builder.

    Reasons: ``empty``, ``no_start_byte``, ``bad_version``, ``truncated``, ``bad_tlv``,
    ``bad_message_info``, ``unknown_type``, ``bad_status``, ``bad_argument``, and for
    command text (:mod:`bridge.mms.commandtext`) ``not_hex``, ``odd_length``.
    """


class MessageType(IntEnum):
    """Byte 0 of tag 81 (PROTOCOL.md §3.2)."""

    HOST_REQUEST = 0x01
    HOST_RESPONSE = 0x02
    HOST_NOTIFICATION = 0x03
    HOST_FILE = 0x04
    DEVICE_REQUEST = 0x81
    DEVICE_RESPONSE = 0x82
    DEVICE_NOTIFICATION = 0x83
    DEVICE_FILE = 0x84

    @property
    def is_file(self) -> bool:
        """Whether this is a data-file type (tag 81 is 8 bytes long)."""
        return self in (MessageType.HOST_FILE, MessageType.DEVICE_FILE)

    @property
    def is_response(self) -> bool:
        """Whether this is a response type (02 or 82)."""
        return self in (MessageType.HOST_RESPONSE, MessageType.DEVICE_RESPONSE)

    @property
    def is_notification(self) -> bool:
        """Whether this is a notification type (03 or 83)."""
        return self in (MessageType.HOST_NOTIFICATION, MessageType.DEVICE_NOTIFICATION)


@dataclass(frozen=True, slots=True)
class OperationStatus:
    """Tag 82 of a response: a summary byte and a 3-byte detail code (PROTOCOL.md §3.3).

    Attributes:
        summary: 00 done, 01 started, 40/41 with warnings, 80 failed to start, 81 failed.
        detail: group, subgroup and code as one integer (``0x020316`` = low battery).
    """

    summary: int
    detail: int

    @classmethod
    def from_bytes(cls, data: bytes) -> OperationStatus:
        """Decode the 4 bytes of tag 82.

        Raises:
            MessageError: not exactly 4 bytes.
        """
        if len(data) != STATUS_LENGTH:
            raise MessageError(f"status of {len(data)} bytes, expected 4", reason="bad_status")
        return cls(data[0], int.from_bytes(data[1:], "big"))

    def to_bytes(self) -> bytes:
        """The 4 bytes of tag 82."""
        return bytes((self.summary,)) + self.detail.to_bytes(3, "big")

    @property
    def ok(self) -> bool:
        """Success: done, started, or either with warnings."""
        return self.summary < _OK_LIMIT

    @property
    def summary_name(self) -> str:
        """The summary byte's meaning, e.g. ``"OK, started"``."""
        return summary_name(self.summary)

    @property
    def detail_name(self) -> str:
        """The detail code's meaning, e.g. ``"device state: no transaction"``."""
        return detail_name(self.detail)

    def __str__(self) -> str:
        return f"{self.summary:02X} {self.detail:06X} ({self.summary_name}; {self.detail_name})"


@dataclass(frozen=True, slots=True)
class Message:
    """One parsed MMS message. Build it with :func:`parse_message`.

    Attributes:
        version: the API framework version byte.
        message_type: byte 0 of tag 81.
        ref: the reference number (``00`` on notifications).
        command_id: command, response or notification id (tag 81 bytes 2-3).
        status: tag 82 of a response, else None.
        notification_detail: the 4 bytes of tag 82 of a notification, else None.
        payload: the first top-level tag 84's value, including the 2-byte id echo.
        tlvs: every top-level TLV in order.
        raw: the bytes this message was parsed from.
        file_type: tag 81 bytes 4-7 on file messages, else None.
    """

    version: int
    message_type: MessageType
    ref: int
    command_id: int
    status: OperationStatus | None
    notification_detail: bytes | None
    payload: bytes | None
    tlvs: tuple[Tlv, ...]
    raw: bytes
    file_type: bytes | None = None

    def encode(self) -> bytes:
        """Re-encode from the TLVs: equal to ``raw`` for anything :func:`parse_message` made."""
        return bytes((START_BYTE, self.version)) + encode_tlvs(self.tlvs)

    def payload_tlvs(self) -> list[Tlv]:
        """The TLVs of the payload after the id echo (empty if there is no payload).

        Raises:
            TlvError: the payload after the echo is not a TLV list.
        """
        if self.payload is None:
            return []
        return decode_tlvs(self.payload, offset=ID_ECHO_LENGTH)

    @property
    def is_response(self) -> bool:
        """Whether tag 81 says response (tag 82 is then an operation status)."""
        return self.message_type.is_response

    @property
    def is_notification(self) -> bool:
        """Whether tag 81 says notification (tag 82 is then a notification detail)."""
        return self.message_type.is_notification


def parse_message(data: bytes) -> Message:
    """Parse one whole MMS message.

    Args:
        data: the message bytes, exactly (no HID padding).

    Returns:
        The message; ``message.encode() == data``.

    Raises:
        MessageError: with ``reason`` ``empty``, ``no_start_byte``, ``truncated``,
            ``bad_version``, ``bad_tlv``, ``bad_message_info``, ``unknown_type`` or
            ``bad_status``, and the offset where known.
    """
    data = bytes(data)
    if not data:
        raise MessageError("no bytes", reason="empty", offset=0)
    if data[0] != START_BYTE:
        raise MessageError(f"first byte {data[0]:02X}, expected AA", reason="no_start_byte",
                           offset=0)
    if len(data) < 3:
        raise MessageError("message ends before its first TLV", reason="truncated",
                           offset=len(data))
    version = data[1]
    if version > MAX_VERSION:
        raise MessageError(f"version {version:02X} above {MAX_VERSION:02X}", reason="bad_version",
                           offset=1)
    try:
        tlvs = decode_tlvs(data, offset=2)
    except TlvError as exc:
        reason = "truncated" if exc.reason in _TRUNCATION_REASONS else "bad_tlv"
        raise MessageError(f"bad TLV: {exc.detail}", reason=reason, offset=exc.offset) from exc
    info = tlvs[0]
    if info.tag != MESSAGE_INFO_TAG or len(info.value) not in (INFO_LENGTH, FILE_INFO_LENGTH):
        raise MessageError(f"first TLV is {info.tag_hex} of {len(info.value)} bytes, expected 81 "
                           "of 4 or 8", reason="bad_message_info", offset=2)
    try:
        message_type = MessageType(info.value[0])
    except ValueError:
        raise MessageError(f"unknown message type {info.value[0]:02X}", reason="unknown_type",
                           offset=2 + len(info.encode()) - len(info.value)) from None
    if (len(info.value) == FILE_INFO_LENGTH) != message_type.is_file:
        raise MessageError(
            f"tag 81 of {len(info.value)} bytes on a type {message_type:02X} message",
            reason="bad_message_info", offset=2)
    status: OperationStatus | None = None
    detail: bytes | None = None
    status_tlv = next((t for t in tlvs if t.tag == STATUS_TAG), None)
    if status_tlv is not None and (message_type.is_response or message_type.is_notification):
        if len(status_tlv.value) != STATUS_LENGTH:
            raise MessageError(f"tag 82 of {len(status_tlv.value)} bytes, expected 4",
                               reason="bad_status")
        if message_type.is_response:
            status = OperationStatus.from_bytes(status_tlv.value)
        else:
            detail = status_tlv.value
    payload = next((t.value for t in tlvs if t.tag == PAYLOAD_TAG), None)
    return Message(
        version=version,
        message_type=message_type,
        ref=info.value[1],
        command_id=int.from_bytes(info.value[2:4], "big"),
        status=status,
        notification_detail=detail,
        payload=payload,
        tlvs=tuple(tlvs),
        raw=data,
        file_type=info.value[4:8] if message_type.is_file else None,
    )


def build_request(
    command_id: int, payload: bytes = b"", ref: int = 0, *, version: int = 0
) -> bytes:
    """A host request (type 01): ``AA VV 81 04 01 ref id 84 LL id payload``.

    Args:
        command_id: the 2-byte command id.
        payload: the command TLVs after the id echo (the echo is added here).
        ref: the reference number the response will echo.
        version: the API framework version byte.
    """
    _check_byte("ref", ref)
    _check_byte("version", version)
    info = bytes((MessageType.HOST_REQUEST, ref)) + _id_bytes(command_id)
    body = [Tlv(MESSAGE_INFO_TAG, info), Tlv(PAYLOAD_TAG, _id_bytes(command_id) + payload)]
    return bytes((START_BYTE, version)) + encode_tlvs(body)


def build_response(
    command_id: int,
    ref: int,
    status: tuple[int, int] | OperationStatus,
    payload: bytes | None = None,
    *,
    long_payload: bool = False,
    version: int = 0,
) -> bytes:
    """A device response (type 82), as a reader (or our simulator) sends it.

    Args:
        command_id: the id of the request being answered.
        ref: the request's reference number.
        status: ``(summary, detail)`` or an ``OperationStatus``.
        payload: TLVs after the id echo; None omits tag 84, ``b""`` writes the bare echo.
        long_payload: write 84's length as ``82 LL LL`` like real property reads
            (PROTOCOL.md §3.4).
        version: the API framework version byte.
    """
    op = status if isinstance(status, OperationStatus) else OperationStatus(*status)
    if not 0 <= op.summary <= 0xFF or not 0 <= op.detail <= 0xFFFFFF:
        raise MessageError(f"status {op!r} out of range", reason="bad_argument")
    return _build_device(MessageType.DEVICE_RESPONSE, command_id, ref, op.to_bytes(),
                         payload=payload, long_payload=long_payload, version=version)


def build_notification(
    notification_id: int,
    detail: bytes,
    payload: bytes | None = None,
    *,
    long_payload: bool = False,
    version: int = 0,
) -> bytes:
    """A device notification (type 83, ref 00) with its 4 detail bytes (PROTOCOL.md §5).

    Args:
        notification_id: source byte + type byte, e.g. 0x0101.
        detail: the 4 bytes of tag 82.
        payload: TLVs after the id echo; None omits tag 84.
        long_payload: write 84's length as ``82 LL LL`` (PROTOCOL.md §3.4).
        version: the API framework version byte.
    """
    if len(detail) != STATUS_LENGTH:
        raise MessageError(f"detail of {len(detail)} bytes, expected 4", reason="bad_argument")
    return _build_device(MessageType.DEVICE_NOTIFICATION, notification_id, 0, bytes(detail),
                         payload=payload, long_payload=long_payload, version=version)


def _build_device(message_type: MessageType, message_id: int, ref: int, status: bytes, *,
                  payload: bytes | None, long_payload: bool, version: int) -> bytes:
    _check_byte("ref", ref)
    _check_byte("version", version)
    info = bytes((message_type, ref)) + _id_bytes(message_id)
    body = [Tlv(MESSAGE_INFO_TAG, info), Tlv(STATUS_TAG, status)]
    if payload is not None:
        form = _FORCED_LONG_FORM if long_payload else 0
        body.append(Tlv(PAYLOAD_TAG, _id_bytes(message_id) + payload, form))
    return bytes((START_BYTE, version)) + encode_tlvs(body)


def _id_bytes(message_id: int) -> bytes:
    if not 0 <= message_id <= 0xFFFF:
        raise MessageError(f"id {message_id} is not 2 bytes", reason="bad_argument")
    return message_id.to_bytes(2, "big")


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise MessageError(f"{name} {value} is not one byte", reason="bad_argument")


__all__ = [
    "FILE_INFO_LENGTH",
    "INFO_LENGTH",
    "MAX_VERSION",
    "START_BYTE",
    "Message",
    "MessageError",
    "MessageType",
    "OperationStatus",
    "build_notification",
    "build_request",
    "build_response",
    "command_name",
    "notification_detail_name",
    "notification_name",
    "parse_message",
]
