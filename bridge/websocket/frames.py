"""What each kind of WebSocket client is sent: MagTek's wire format, or that plus JSON frames.

By default the endpoint behaves like a MagTek reader's own WebSocket interface: every text
frame is one whole MMS message as upper-case hex, and nothing else ever goes out. MagTek's
client classes parse every text frame as MMS hex, so a JSON frame would reach them as a
garbage message. Clients that want the bridge's JSON ``status`` and ``error`` frames ask for
them: the WebSocket subprotocol ``magtek-bridge-json``, or the query parameter
``?frames=json`` (the bridge's ``/ui`` page uses the subprotocol).

A refused command on a plain connection is answered the only way MagTek's parser reads
correctly: an MMS failure response to that command (same reference number and command id),
made by the bridge, status per ``REFUSAL_STATUS``. MagTek's ``sendCommand`` waits, with no
timeout, for the next device response, so a silent refusal would hang it. A frame whose
reference number and command id cannot be read (not hex, odd length, not an MMS request)
gets no answer at all, as a reader ignores bytes it cannot parse.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qs, urlsplit

from bridge.errors import ProtocolError
from bridge.intake import Rejection
from bridge.mms import MessageType, build_response, normalize_command_hex, parse_message

JSON_SUBPROTOCOL: Final = "magtek-bridge-json"
JSON_QUERY: Final = ("frames", "json")

# Status of the bridge-made failure response (PROTOCOL.md §3.3 detail codes): the reader is
# offline -> 80 010109 "device offline"; anything else -> 80 010102 "bad message parameter".
REFUSAL_STATUS: Final[dict[str, tuple[int, int]]] = {
    "reader_absent": (0x80, 0x010109),
    "busy": (0x80, 0x020101),
}
DEFAULT_REFUSAL_STATUS: Final = (0x80, 0x010102)


def select_json(target: str, offered: list[str] | tuple[str, ...]) -> tuple[bool, str | None]:
    """(JSON frames wanted?, subprotocol to accept) for a request target and offered list."""
    if JSON_SUBPROTOCOL in offered:
        return True, JSON_SUBPROTOCOL
    name, value = JSON_QUERY
    return value in parse_qs(urlsplit(target).query).get(name, []), None


def refusal_response(frame: str | bytes, rejection: Rejection) -> str | None:
    """The MMS hex a plain client gets for a refused ``frame``, or ``None`` (no answer)."""
    try:
        data = frame if isinstance(frame, bytes) else normalize_command_hex(frame)
        if isinstance(frame, bytes) and frame[:1] != b"\xaa":
            return None
        request = parse_message(data)
    except ProtocolError:
        return None
    if request.message_type not in (MessageType.HOST_REQUEST, MessageType.HOST_FILE):
        return None
    status = REFUSAL_STATUS.get(rejection.reason, DEFAULT_REFUSAL_STATUS)
    return build_response(request.command_id, request.ref, status).hex().upper()


__all__ = ["DEFAULT_REFUSAL_STATUS", "JSON_QUERY", "JSON_SUBPROTOCOL", "REFUSAL_STATUS",
           "refusal_response", "select_json"]
