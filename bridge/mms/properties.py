"""Device properties: the Get/Set Property path encodings (PROTOCOL.md §3.6, §3.7, §4).

A property is a dotted path such as 2.2.1.1.1.1 (serial number). The first component is the
tree (``85 01 <tree>``), the last is the leaf, and the ones between are nodes. Two wire forms
exist and a response mirrors the request's:

* ``"87"``: ``87 <node bytes>`` then ``89 <C0+leaf> <len> <value>``;
* ``"nested"``: ``89 <E0+node <E0+node ... <C0+leaf> <len> <value>>>``.

Components are written in hex, as the manual does (1.2.2.1.1.A).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from bridge.mms.messages import Message, MessageError, build_response
from bridge.mms.tlv import MAX_NESTING_DEPTH, Tlv, TlvError, decode_tlvs, encode_tlvs

PathForm = Literal["87", "nested"]

GET_PROPERTY: Final = 0xD101
SET_PROPERTY: Final = 0xD111

MMS_OID: Final = bytes.fromhex("2B06010401F609")
"""The optional ``81 07`` prefix of property requests (1.3.6.1.4.1.15113, PROTOCOL.md §3.6)."""

MAX_COMPONENT: Final = 0x1E
"""Largest path component: ``E0+k`` must stay a one-byte tag (``FF`` starts a multi-byte one)."""

_OID_TAG: Final = b"\x81"
_TREE_TAG: Final = b"\x85"
_NODES_TAG: Final = b"\x87"
_PATH_TAG: Final = b"\x89"
_NODE_BASE: Final = 0xE0
_LEAF_BASE: Final = 0xC0
_BASE_MASK: Final = 0xE0

SERIAL_NUMBER: Final = (2, 2, 1, 1, 1, 1)
MAIN_FIRMWARE: Final = (2, 1, 2, 2, 2, 2)
USER_EVENT_CONTROLS: Final = (1, 2, 7, 1, 2, 1)
WEBSOCKET_CONNECTIONS: Final = (1, 2, 2, 1, 1, 0xA)

PROPERTY_NAMES: Final[dict[tuple[int, ...], str]] = {
    SERIAL_NUMBER: "Device Serial Number",
    (2, 2, 1, 1, 1, 2): "Capabilities",
    (2, 2, 1, 1, 1, 3): "PCI Hardware ID",
    MAIN_FIRMWARE: "Main Firmware Version",
    (2, 1, 2, 1, 1, 2): "Boot Firmware Version",
    (2, 1, 2, 5, 3, 1): "Wi-Fi Firmware Version",
    (2, 1, 2, 7, 1, 1): "BLE Firmware Version",
    USER_EVENT_CONTROLS: "User Event Notification Controls",
    WEBSOCKET_CONNECTIONS: "WebSocket Connections",
}
"""Properties PROTOCOL.md names (§3.7, §4, §7). None holds card data, so describe() shows
their values whatever their length."""


@dataclass(frozen=True, slots=True)
class PropertyValue:
    """A property path and value found in a Get/Set Property message.

    Attributes:
        path: tree, nodes and leaf (``(2, 2, 1, 1, 1, 1)``).
        value: the leaf's value (empty in a get request).
        form: the wire form the path was written in.
    """

    path: tuple[int, ...]
    value: bytes
    form: PathForm

    @property
    def dotted(self) -> str:
        """The path in the manual's notation, e.g. ``"1.2.2.1.1.A"``."""
        return format_path(self.path)

    @property
    def name(self) -> str | None:
        """The property's name if PROTOCOL.md names it."""
        return PROPERTY_NAMES.get(self.path)


def parse_path(path: str | Sequence[int]) -> tuple[int, ...]:
    """Normalise ``"2.2.1.1.1.1"`` (hex components) or a sequence of ints.

    Raises:
        MessageError: fewer than 2 components, or one outside 0..0x1E (``bad_argument``).
    """
    try:
        parts = tuple(int(p, 16) for p in path.split(".")) if isinstance(path, str) else tuple(path)
    except ValueError as exc:
        raise MessageError(f"bad property path {path!r}", reason="bad_argument") from exc
    if len(parts) < 2 or any(not 0 <= p <= MAX_COMPONENT for p in parts):
        raise MessageError(f"bad property path {path!r}", reason="bad_argument")
    return parts


def format_path(path: Sequence[int]) -> str:
    """``(1, 2, 2, 1, 1, 10)`` -> ``"1.2.2.1.1.A"``."""
    return ".".join(f"{p:X}" for p in path)


def property_tlvs(path: str | Sequence[int], value: bytes = b"", *, form: PathForm = "nested",
                  oid: bool = True) -> bytes:
    """The request payload (after the id echo) naming ``path`` with leaf ``value``.

    ``value`` empty means "get" (``C1 00``).
    """
    parts = parse_path(path)
    tree, nodes, leaf = parts[0], parts[1:-1], parts[-1]
    items = [Tlv(_OID_TAG, MMS_OID)] if oid else []
    items.append(Tlv(_TREE_TAG, bytes((tree,))))
    leaf_tlv = Tlv(bytes((_LEAF_BASE + leaf,)), value)
    if form == "87":
        items += [Tlv(_NODES_TAG, bytes(nodes)), Tlv(_PATH_TAG, leaf_tlv.encode())]
    else:
        inner = leaf_tlv
        for node in reversed(nodes):
            inner = Tlv(bytes((_NODE_BASE + node,)), inner.encode())
        items.append(Tlv(_PATH_TAG, inner.encode()))
    return encode_tlvs(items)


def read_property(message: Message) -> PropertyValue:
    """The path and leaf value of a Get/Set Property request or response, in either form.

    Raises:
        MessageError: no tree/path tags, or a path that does not decode (``no_property``).
    """
    try:
        items = message.payload_tlvs()
        tree = next((t.value for t in items if t.tag == _TREE_TAG), None)
        holder = next((t for t in items if t.tag == _PATH_TAG), None)
        nodes_tlv = next((t for t in items if t.tag == _NODES_TAG), None)
        if tree is None or len(tree) != 1 or holder is None:
            raise MessageError("no property path (tags 85 and 89)", reason="no_property")
        chain, leaf = _descend(holder)
    except TlvError as exc:
        raise MessageError(f"property path does not decode: {exc}", reason="no_property") from exc
    if nodes_tlv is not None and not chain:
        return PropertyValue((tree[0], *nodes_tlv.value, leaf[0] - _LEAF_BASE), leaf[1], "87")
    nodes = tuple(tag - _NODE_BASE for tag in chain)
    return PropertyValue((tree[0], *nodes, leaf[0] - _LEAF_BASE), leaf[1], "nested")


def property_response(request: Message, value: bytes,
                      status: tuple[int, int] = (0x00, 0x000000)) -> bytes:
    """The device's answer to a Get Property ``request``, with the leaf filled in.

    Mirrors the request's OID prefix and path form and writes 84 as ``82 LL LL``, as real
    readers do (PROTOCOL.md §3.4, §4): the §4 simulator responses come out byte for byte.

    Raises:
        MessageError: the request has no property path.
    """
    current = read_property(request)
    # The last TLV property_tlvs writes is the 89 path holder, now with the value inside.
    filled = decode_tlvs(property_tlvs(current.path, value, form=current.form, oid=False))[-1]
    out = [filled if item.tag == _PATH_TAG else item for item in request.payload_tlvs()]
    return build_response(request.command_id, request.ref, status, encode_tlvs(out),
                          long_payload=True)


def _descend(holder: Tlv) -> tuple[list[int], tuple[int, bytes]]:
    """Follow 89 down through E-nodes to the C-leaf: (node tags, (leaf tag, leaf value))."""
    chain: list[int] = []
    current = holder
    for _ in range(MAX_NESTING_DEPTH):
        children = current.children()
        if not children:
            break
        child = children[0]
        kind = child.tag[0] & _BASE_MASK
        if len(child.tag) != 1:
            break
        if kind == _LEAF_BASE:
            return chain, (child.tag[0], child.value)
        if kind != _NODE_BASE:
            break
        chain.append(child.tag[0])
        current = child
    raise MessageError("property path has no leaf", reason="no_property")


__all__ = [
    "GET_PROPERTY",
    "MAIN_FIRMWARE",
    "MMS_OID",
    "PROPERTY_NAMES",
    "SERIAL_NUMBER",
    "SET_PROPERTY",
    "USER_EVENT_CONTROLS",
    "WEBSOCKET_CONNECTIONS",
    "PathForm",
    "PropertyValue",
    "format_path",
    "parse_path",
    "property_response",
    "property_tlvs",
    "read_property",
]
