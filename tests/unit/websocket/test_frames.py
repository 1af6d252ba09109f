"""What plain and JSON WebSocket clients are sent (bridge.websocket.frames)."""

from __future__ import annotations

import pytest

from bridge.intake import Rejection
from bridge.mms import commands, parse_message
from bridge.websocket.frames import JSON_SUBPROTOCOL, refusal_response, select_json


def test_json_frames_only_for_clients_that_ask():
    assert select_json("/", ()) == (False, None)
    assert select_json("/", ("chat",)) == (False, None)
    assert select_json("/x?token=t", (JSON_SUBPROTOCOL,)) == (True, JSON_SUBPROTOCOL)
    assert select_json("/x?token=t&frames=json", ()) == (True, None)
    assert select_json("/x?frames=hex", ()) == (False, None)


@pytest.mark.parametrize(
    ("reason", "status"),
    [("reader_absent", (0x80, 0x010109)), ("busy", (0x80, 0x020101)),
     ("too_large", (0x80, 0x010102))],
)
def test_a_refused_request_gets_an_mms_failure_response_to_it(reason, status):
    request = commands.get_serial_number(0x41)
    for frame in (request.hex(), "SENDCOMMAND," + request.hex().upper(), request):
        answer = refusal_response(frame, Rejection(reason, "why"))
        assert answer is not None and answer == answer.upper()
        response = parse_message(bytes.fromhex(answer))
        assert (response.ref, response.command_id) == (0x41, 0xD101)
        assert response.status is not None
        assert (response.status.summary, response.status.detail) == status


@pytest.mark.parametrize("frame", ["not hex", "AA0", "0102", b"\x01\x02",
                                   "AA00810482131008820400000000"])  # a response, not a request
def test_what_cannot_be_read_as_a_request_gets_no_answer(frame):
    assert refusal_response(frame, Rejection("not_hex", "why")) is None
