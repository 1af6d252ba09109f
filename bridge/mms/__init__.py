"""MagTek MMS protocol, sans I/O: HID framing, messages, TLVs, commands, redaction.

Takes bytes, returns bytes or events; never reads, writes, sleeps, logs or counts. Imports
nothing outside the standard library and :mod:`bridge.errors`. PROTOCOL.md §2-§5 and §9 are
the authority on every byte.
"""

from __future__ import annotations

from bridge.mms import commands
from bridge.mms.commands import (
    EXAMPLES,
    buzzer,
    cancel_transaction,
    command_by_name,
    get_firmware_id,
    get_property,
    get_serial_number,
    get_serial_number_nested,
    parse_firmware_id,
    parse_serial_number,
    reset_device,
    set_property,
    set_user_events,
    show_qr_code,
    start_transaction,
)
from bridge.mms.commandtext import normalize_command_hex
from bridge.mms.messages import (
    Message,
    MessageError,
    MessageType,
    OperationStatus,
    build_notification,
    build_request,
    build_response,
    parse_message,
)
from bridge.mms.names import (
    command_name,
    detail_name,
    notification_detail_name,
    notification_name,
    summary_name,
)
from bridge.mms.packets import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_REPORT_LEN,
    DropReason,
    FrameDropped,
    FramingError,
    MessageReceived,
    PacketReassembler,
    PacketType,
    Reassembler,
    ReassemblyEvent,
    max_message_size,
    packetize,
)
from bridge.mms.properties import PropertyValue, property_response, property_tlvs, read_property
from bridge.mms.redact import describe, describe_dict, safe_summary
from bridge.mms.tlv import Tlv, TlvError, decode_tlvs, encode_tlvs, find_tag, tlv, walk

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_REPORT_LEN",
    "EXAMPLES",
    "DropReason",
    "FrameDropped",
    "FramingError",
    "Message",
    "MessageError",
    "MessageReceived",
    "MessageType",
    "OperationStatus",
    "PacketReassembler",
    "PacketType",
    "PropertyValue",
    "Reassembler",
    "ReassemblyEvent",
    "Tlv",
    "TlvError",
    "build_notification",
    "build_request",
    "build_response",
    "buzzer",
    "cancel_transaction",
    "command_by_name",
    "command_name",
    "commands",
    "decode_tlvs",
    "describe",
    "describe_dict",
    "detail_name",
    "encode_tlvs",
    "find_tag",
    "get_firmware_id",
    "get_property",
    "get_serial_number",
    "get_serial_number_nested",
    "max_message_size",
    "normalize_command_hex",
    "notification_detail_name",
    "notification_name",
    "packetize",
    "parse_firmware_id",
    "parse_message",
    "parse_serial_number",
    "property_response",
    "property_tlvs",
    "read_property",
    "reset_device",
    "safe_summary",
    "set_property",
    "set_user_events",
    "show_qr_code",
    "start_transaction",
    "summary_name",
    "tlv",
    "walk",
]
