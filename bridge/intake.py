"""Validation of commands arriving for a reader (MQTT ``SendCommand``, later WebSocket).

Pure: takes the payload and its delivery facts, returns either a ``Command`` ready to write or
a ``Rejection`` with a machine-readable reason (a metric label) and a human detail. Nothing
that fails here ever reaches a reader.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from bridge.errors import ProtocolError
from bridge.mms import Message, MessageType, normalize_command_hex, parse_message

# Message types a host may send (PROTOCOL.md §3.2): requests and data files.
_HOST_TYPES: Final = frozenset({MessageType.HOST_REQUEST, MessageType.HOST_FILE})
_START_BYTE: Final = 0xAA


@dataclass(frozen=True, slots=True)
class Command:
    """A validated command, waiting to be written to its reader."""

    data: bytes
    message: Message
    received_at: float
    deadline: float | None = None  # monotonic; from the MQTT v5 message expiry
    response_topic: str | None = None
    correlation_data: bytes | None = None

    @property
    def key(self) -> tuple[int, int]:
        """What the matching response carries: (reference number, command id)."""
        return (self.message.ref, self.message.command_id)

    def expired(self, now: float | None = None) -> bool:
        if self.deadline is None:
            return False
        return (time.monotonic() if now is None else now) >= self.deadline


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a command was refused. ``reason`` is a bounded metric label."""

    reason: str
    detail: str


def validate_command(
    payload: bytes,
    *,
    max_size: int,
    retained: bool = False,
    received_at: float | None = None,
    expiry_interval: int | None = None,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
) -> Command | Rejection:
    """Turn a raw command payload into a ``Command``, or say why not.

    Accepts hex text in any case with whitespace, the demo ``SENDCOMMAND,<hex>`` form
    (PROTOCOL.md §7), and raw binary MMS bytes (first byte ``0xAA``, which no hex text starts
    with).

    Args:
        payload: the bytes as delivered.
        max_size: largest MMS message (in bytes) we relay.
        retained: the broker replayed a retained message: a stale leftover, never run.
        received_at: monotonic arrival time (defaults to now).
        expiry_interval: MQTT v5 message expiry in seconds, as delivered.
        response_topic: MQTT v5 response topic, if any.
        correlation_data: MQTT v5 correlation data, if any.
    """
    now = time.monotonic() if received_at is None else received_at
    if retained:
        return Rejection("retained", "retained commands are stale leftovers and are never run")
    if expiry_interval == 0:
        return Rejection("expired", "the command's message expiry had already passed")
    # Hex text takes two characters a byte plus some whitespace: refuse absurd sizes before
    # doing any work on them.
    if len(payload) > 3 * max_size + 64:
        return Rejection("too_large", f"payload of {len(payload)} bytes exceeds the cap")
    try:
        data = _command_data(payload)
    except ProtocolError as exc:
        return Rejection(exc.reason, str(exc))
    if len(data) > max_size:
        return Rejection("too_large", f"message of {len(data)} bytes exceeds {max_size}")
    try:
        message = parse_message(data)
    except ProtocolError as exc:
        return Rejection("not_mms", f"not an MMS message: {exc}")
    if message.message_type not in _HOST_TYPES:
        return Rejection(
            "not_request",
            f"message type 0x{int(message.message_type):02X} is not a host request or file",
        )
    deadline = None if expiry_interval is None else now + expiry_interval
    return Command(
        data=data,
        message=message,
        received_at=now,
        deadline=deadline,
        response_topic=response_topic,
        correlation_data=correlation_data,
    )


def clears_retained_command(payload: bytes) -> bool:
    """An empty ``SendCommand`` is how MQTT clears a retained command (an empty retained
    publish deletes it): accepted silently, never run and never answered with an ``Error``.

    The broker hands it to current subscribers without the retain flag (MQTT 3.1.1, and v5
    without retain-as-published), so emptiness alone decides: no command is ever empty.
    """
    return not payload


# Larger payloads are not parsed just to name them in a report (they are refused as too large).
_REFERENCE_LIMIT: Final = 4 << 20


def _command_data(payload: bytes) -> bytes:
    """A command's MMS bytes: raw (it starts with the start byte) or hex text; raises
    ``ProtocolError`` on text that is not hex."""
    if payload[:1] == bytes([_START_BYTE]):
        return bytes(payload)
    return normalize_command_hex(payload.decode("latin-1"))


def command_reference(payload: bytes) -> tuple[int, int] | None:
    """(reference number, command id) of a refused command, when it reads as an MMS message.

    Only what an ``Error`` report sent in full needs (a few a second at most, never per
    refusal in a flood): it names the command so its sender can tell its refusal from others'.
    """
    if len(payload) > _REFERENCE_LIMIT:
        return None
    try:
        message = parse_message(_command_data(payload))
    except ProtocolError:
        return None
    return message.ref, message.command_id


def rejection_report(rejection: Rejection, *, topic: str, size: int,
                     reference: tuple[int, int] | None = None) -> bytes:
    """The JSON body published on a reader's ``Error`` topic for a refused command.

    ``reference`` (from ``command_reference``) adds ``ref`` and ``command_id`` as upper-case
    hex, written as ``monitor --json`` and ``decode --json`` write them.
    """
    body = {
        "error": "command_rejected",
        "reason": rejection.reason,
        "detail": rejection.detail,
        "topic": topic,
        "size": size,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    if reference is not None:
        body["ref"] = f"{reference[0]:02X}"
        body["command_id"] = f"{reference[1]:04X}"
    return json.dumps(body).encode()


__all__ = ["Command", "Rejection", "clears_retained_command", "command_reference",
           "rejection_report", "validate_command"]
