"""Human and log renderings of MMS messages that never show card data (PROTOCOL.md §9).

:func:`describe` and :func:`describe_dict` render every TLV, but by default replace with
``<masked>`` the value of:

* the ``84`` payload of notifications 0101, 0205, 1001 ``01xx`` (user events), 1803 and 1805,
  and of data-file messages;
* any tag in :data:`SENSITIVE_TAGS` (track data, PAN, name, expiry, cryptograms, KSNs, PIN
  block, NFC UID, barcode data), wherever it is nested;
* any value longer than :data:`MAX_CLEAR_VALUE` bytes, except the values of the properties
  PROTOCOL.md names (serial, firmware versions, capabilities, ...), which hold no card data;
* any value shaped like a card number (:func:`pan_like`), whatever its tag or length.

A masked payload still shows which tags it holds (``tags``: names only, nested, never values
or lengths; PROTOCOL.md §9 allows tag presence), reading into the ARQC/batch blob of 0101 the
way MagTek's reference does (its 2-byte length, then the ``F9`` container). A serial number
property also shows the 7-character serial (§4).

:func:`safe_summary` is for logs: ids, status and tag names, never values.
"""

from __future__ import annotations

from typing import Final

from bridge.mms.messages import ID_ECHO_LENGTH, Message, MessageType
from bridge.mms.names import command_name, notification_detail_name, notification_name
from bridge.mms.properties import (
    GET_PROPERTY,
    PROPERTY_NAMES,
    SERIAL_NUMBER,
    SET_PROPERTY,
    read_property,
)
from bridge.mms.tlv import MAX_NESTING_DEPTH, Tlv, TlvError, decode_tlvs

MAX_CLEAR_VALUE: Final = 16
"""Longest value shown in clear; longer blobs may be card data (PROTOCOL.md §9)."""

MASKED: Final = "<masked>"

SENSITIVE_TAGS: Final = frozenset(bytes.fromhex(tag) for tag in (
    "56", "57", "5A", "5F20", "5F24", "5F30", "5F34", "99", "9F1F", "9F20", "9F6B",  # card
    "DF74",  # barcode data (may hold tokens)
    "DF79",  # NFC UID
    "DFDF33", "DFDF4D",  # masked track 2
    "DFDF41", "DFDF54", "DFDF56",  # KSNs
    "DFDF59", "DFDFDF37",  # encrypted card data
    "EE",  # secure wrappers
))
"""Tags whose values are never shown (PROTOCOL.md §9), with the EMV track/PAN tags."""

MASKED_NOTIFICATIONS: Final = frozenset({0x0101, 0x0205, 0x1803, 0x1805})
"""Notifications whose whole 84 payload is masked (PROTOCOL.md §9)."""

_DEVICE_INFO: Final = 0x1001
_USER_EVENT_CATEGORY: Final = 0x01  # 1001 01xx: user events may carry an NFC UID
_TLV_LISTS: Final = frozenset({b"\x86", b"\x89"})  # primitive, TLVs by convention (§3.5)
_PAYLOAD_TAG: Final = b"\x84"
_PATH_TAG: Final = b"\x89"
_PRINTABLE: Final = frozenset(range(0x20, 0x7F))
_PAN_TEXT: Final = frozenset(b"0123456789 .-")
_SERIAL_DIGITS: Final = 7
_BLOB_LENGTH: Final = 2  # the ARQC/batch blob's own length prefix (§5)

Node = dict[str, object]


def describe_dict(message: Message, *, mask: bool = True) -> dict[str, object]:
    """A JSON-ready rendering: ids, names, status or detail, and the TLV tree.

    Args:
        message: the parsed message.
        mask: hide sensitive values (see the module docstring); False shows everything.
    """
    out: dict[str, object] = {
        "type": message.message_type.name.lower(),
        "version": message.version,
        "ref": f"{message.ref:02X}",
        "id": f"{message.command_id:04X}",
        "name": _id_name(message),
        "length": len(message.raw),
    }
    if message.status is not None:
        out["status"] = {
            "summary": f"{message.status.summary:02X}",
            "detail": f"{message.status.detail:06X}",
            "text": f"{message.status.summary_name}; {message.status.detail_name}",
            "ok": message.status.ok,
        }
    if message.notification_detail is not None:
        out["detail"] = {
            "code": message.notification_detail.hex().upper(),
            "text": notification_detail_name(message.command_id, message.notification_detail),
        }
    if message.file_type is not None:
        out["file_type"] = message.file_type.hex().upper()
    known_property = _known_property(message)
    if known_property is not None:
        out["property"] = known_property
    out["tlvs"] = _tree(message, mask, known=known_property is not None)
    return out


def describe(message: Message, *, mask: bool = True) -> str:
    """One line for people: ids and names, status or detail, then the TLV tree.

    For example ``device response B5 D101 Get Property: 00 000000 (OK, done; all good)
    property 2.2.1.1.1.1 Device Serial Number | 81[4]=82B5D101 ...``.
    """
    words = [message.message_type.name.lower().replace("_", " ")]
    if not message.message_type.is_notification:
        words.append(f"{message.ref:02X}")
    words.append(f"{message.command_id:04X} {_id_name(message)}")
    line = " ".join(words)
    if message.status is not None:
        line += f": {message.status}"
    if message.notification_detail is not None:
        detail = message.notification_detail
        line += f": {detail.hex().upper()} ({notification_detail_name(message.command_id, detail)})"
    if message.file_type is not None:
        line += f" file type {message.file_type.hex().upper()}"
    prop = _known_property(message)
    if prop is not None:
        line += f" property {prop['path']} {prop['name']}"
        if "serial" in prop:
            line += f" serial {prop['serial']}"
    nodes = _tree(message, mask, known=prop is not None)
    return line + " | " + " ".join(_render(node) for node in nodes)


def safe_summary(message: Message) -> dict[str, object]:
    """Log fields: type, ref, id, status or detail, tags present and lengths. Never values."""
    out: dict[str, object] = {
        "message_type": message.message_type.name.lower(),
        "ref": f"{message.ref:02X}",
        "command_id": f"{message.command_id:04X}",
        "length": len(message.raw),
        "tags": [item.tag_hex for item in message.tlvs],
    }
    if message.status is not None:
        out["status"] = message.status.to_bytes().hex().upper()
    if message.notification_detail is not None:
        out["detail"] = message.notification_detail.hex().upper()
    if message.payload is not None:
        out["payload_length"] = len(message.payload)
        try:
            out["payload_tags"] = [item.tag_hex for item in message.payload_tlvs()]
        except TlvError:
            out["payload_tags"] = None
    return out


def _id_name(message: Message) -> str:
    if message.message_type.is_notification:
        return notification_name(message.command_id)
    return command_name(message.command_id)


def _payload_masked(message: Message) -> bool:
    if message.message_type in (MessageType.HOST_FILE, MessageType.DEVICE_FILE):
        return True  # firmware images, signatures: never shown (PROTOCOL.md §9)
    if not message.message_type.is_notification:
        return False
    if message.command_id in MASKED_NOTIFICATIONS:
        return True
    detail = message.notification_detail or b""
    return message.command_id == _DEVICE_INFO and detail[:1] == bytes((_USER_EVENT_CATEGORY,))


def _known_property(message: Message) -> dict[str, object] | None:
    """Path, name and value of a property PROTOCOL.md names, for D101/D111 messages."""
    if message.command_id not in (GET_PROPERTY, SET_PROPERTY) or message.message_type.is_file:
        return None
    try:
        prop = read_property(message)
    except (TlvError, ValueError):
        return None
    name = PROPERTY_NAMES.get(prop.path)
    if name is None:
        return None
    out: dict[str, object] = {"path": prop.dotted, "name": name, "form": prop.form}
    if prop.value:
        out["value"] = prop.value.hex().upper()
        text = _text(prop.value)
        if text is not None:
            out["text"] = text
        if prop.path == SERIAL_NUMBER:
            out["serial"] = prop.value.hex().upper()[:_SERIAL_DIGITS]  # §4: 3.5 bytes
    return out


def _tree(message: Message, mask: bool, *, known: bool) -> list[Node]:
    """Every top-level TLV rendered; ``known`` = a named property, whose values may be long."""
    hide_payload = mask and _payload_masked(message)
    allow_long = not mask or known
    return [
        _payload_node(item, hide_payload, mask, allow_long, file=message.message_type.is_file)
        if item.tag == _PAYLOAD_TAG
        else _node(item, mask, allow_long=False, depth=0)
        for item in message.tlvs
    ]


def _payload_node(item: Tlv, hide: bool, mask: bool, allow_long: bool, *, file: bool) -> Node:
    node: Node = {"tag": item.tag_hex, "length": len(item.value)}
    if hide:
        node["value"] = MASKED
        tags = [] if file else _presence(item.value[ID_ECHO_LENGTH:], depth=0)
        if tags:  # a file's payload is data, not TLVs
            node["id"] = item.value[:ID_ECHO_LENGTH].hex().upper()
            node["tags"] = tags
        return node
    if len(item.value) < ID_ECHO_LENGTH:
        return _node(item, mask, allow_long=False, depth=0)
    try:
        children = decode_tlvs(item.value, offset=ID_ECHO_LENGTH)
    except TlvError:
        return _node(item, mask, allow_long=False, depth=0)
    node["id"] = item.value[:ID_ECHO_LENGTH].hex().upper()
    node["children"] = [_node(child, mask, allow_long=allow_long, depth=1) for child in children]
    return node


def _node(item: Tlv, mask: bool, *, allow_long: bool, depth: int) -> Node:
    node: Node = {"tag": item.tag_hex, "length": len(item.value)}
    if mask and item.tag in SENSITIVE_TAGS:
        node["value"] = MASKED
        return node
    if (item.constructed or item.tag in _TLV_LISTS) and item.value and depth < MAX_NESTING_DEPTH:
        try:
            children = item.children()
        except TlvError:
            children = None
        if children is not None:
            # Only a property path (89) may carry a long leaf in clear, and only for known
            # properties; everything else nested keeps the length rule.
            inner_long = allow_long and (item.tag == _PATH_TAG or item.constructed)
            node["children"] = [_node(child, mask, allow_long=inner_long, depth=depth + 1)
                                for child in children]
            return node
    if mask and ((len(item.value) > MAX_CLEAR_VALUE and not allow_long)
                 or pan_like(item.value)):
        node["value"] = MASKED
        return node
    node["value"] = item.value.hex().upper()
    text = _text(item.value) if allow_long else None
    if text is not None:
        node["text"] = text
    return node


def pan_like(value: bytes) -> bool:
    """13-19 digits that pass the Luhn check, as ASCII text (maybe grouped by spaces, dots or
    dashes, NUL-padded) or packed BCD (``F``-padded): a card number in an unexpected place."""
    text = value.rstrip(b"\x00")
    if text and all(b in _PAN_TEXT for b in text):
        digits = bytes(b for b in text if 0x30 <= b <= 0x39).decode("ascii")
    else:
        digits = value.hex().upper().rstrip("F")
        if not digits.isdigit():
            return False
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def luhn_valid(digits: str) -> bool:
    """The card-number check digit (ISO/IEC 7812) holds."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0
def _presence(data: bytes, *, depth: int) -> list[Node]:
    """Which tags ``data`` holds, nested; names only. What does not parse is left out."""
    try:
        items = decode_tlvs(data, allow_padding=True)
    except TlvError:
        return []
    out: list[Node] = []
    for item in items:
        node: Node = {"tag": item.tag_hex}
        inner: bytes | None = None
        if item.constructed:
            inner = item.value
        elif item.tag == _PAYLOAD_TAG and len(item.value) > _BLOB_LENGTH:
            # An ARQC/batch blob: its length, the F9 container, padding and a MAC (§5).
            size = int.from_bytes(item.value[:_BLOB_LENGTH], "big")
            inner = item.value[_BLOB_LENGTH:_BLOB_LENGTH + size]
        if inner and depth < MAX_NESTING_DEPTH:
            children = _presence(inner, depth=depth + 1)
            if children:
                node["tags"] = children
        out.append(node)
    return out


def _render_tags(nodes: list[Node]) -> str:
    parts = []
    for node in nodes:
        children = node.get("tags")
        inner = "{" + _render_tags(children) + "}" if isinstance(children, list) else ""
        parts.append(f"{node['tag']}{inner}")
    return " ".join(parts)


def _render(node: Node) -> str:
    head = f"{node['tag']}[{node['length']}]"
    tags = node.get("tags")
    if isinstance(tags, list):
        return f"{head}={node['value']}{{{node['id']} tags: {_render_tags(tags)}}}"
    children = node.get("children")
    if isinstance(children, list):
        prefix = f"{node['id']} " if "id" in node else ""
        return head + "{" + prefix + " ".join(_render(child) for child in children) + "}"
    if "text" in node:
        return f"{head}={node['text']!r}"
    return f"{head}={node['value']}"


def _text(value: bytes) -> str | None:
    """Printable ASCII (NUL padding removed), else None."""
    stripped = value.rstrip(b"\x00")
    if len(stripped) > 1 and all(b in _PRINTABLE for b in stripped):
        return stripped.decode("ascii")
    return None


__all__ = [
    "MASKED",
    "MASKED_NOTIFICATIONS",
    "MAX_CLEAR_VALUE",
    "SENSITIVE_TAGS",
    "describe",
    "describe_dict",
    "luhn_valid",
    "pan_like",
    "safe_summary",
]
