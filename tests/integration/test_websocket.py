"""The WebSocket endpoint end to end: simulated readers -> bridge -> WebSocket clients
(the ``websockets`` library's client), with the bridge on a real Mosquitto as in production."""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.sync.client import connect

from bridge.app import BridgeApp
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.mms import MessageType, commands
from bridge.mms.messages import build_notification
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import bridge_settings, wait_until
from tests.integration.wsclient import (
    drain_until_closed,
    is_json,
    is_response,
    messages,
    open_client,
    recv_json,
    recv_until,
    status_of,
    ws_bridge,
    ws_url,
)

pytestmark = pytest.mark.integration

SERIAL = "B54E05A"
OTHER = "B654321"
ROOT = f"MagTek/Device/DynaFlexII/{SERIAL}"
OTHER_ROOT = f"MagTek/Device/DynaFlexII/{OTHER}"
GET_SERIAL = 0xD101


def _bus(*serials: str) -> SimulatedBus:
    serials = serials or (SERIAL,)
    return SimulatedBus(count=len(serials), serials=list(serials), auto_present=None)


def _value(metric, *labels):
    child = metric.labels(*labels) if labels else metric
    return child._value.get()


def test_get_serial_round_trip_hex_any_case_with_whitespace(broker):
    with ws_bridge(broker, _bus()) as app, open_client(ws_url(app, "/" + ROOT)) as client:
        assert recv_json(client) == {"type": "status", "status": "connected", "root": ROOT}
        request = commands.get_serial_number(0x42).hex()
        client.send(" ".join(request[i:i + 8] for i in range(0, len(request), 8)).lower())
        frames = recv_until(client, is_response(GET_SERIAL, 0x42))
        assert commands.parse_serial_number(messages(frames)[-1]) == SERIAL
        assert _value(app.metrics.websocket_frames, "in") == 1
        # Counted once send() returns, which can be just after the client has the frame.
        assert wait_until(lambda: _value(app.metrics.websocket_frames, "out") >= 2, 5)
        assert _value(app.metrics.websocket_clients) == 1


def test_start_transaction_and_card_flow_in_order(broker):
    bus = _bus()
    with ws_bridge(broker, bus) as app, open_client(ws_url(app, "/" + ROOT)) as client:
        recv_json(client)
        client.send(commands.start_transaction(0x07).hex().upper())
        first = messages(recv_until(client, is_response(0x1001, 0x07)))
        assert first[-1].status is not None and first[-1].status.summary == 0x01
        bus.readers[0].present_card("tap")
        flow = messages(recv_until(client, lambda f: any(
            m.command_id == 0x0101 and (m.notification_detail or b"")[1:] == b"\x08\x03\x02"
            for m in messages([f]))))
        ids = [(m.command_id, (m.notification_detail or b"").hex()) for m in flow]
        # PROTOCOL.md §5 tap: detected -> ARQC -> Quick Chip deferred -> batch, in this order.
        wanted = [(0x0101, "20010400"), (0x0101, "20080202"), (0x0105, "20020700"),
                  (0x0101, "20080302")]
        positions = [ids.index(w) for w in wanted]
        assert positions == sorted(positions)


def test_sendcommand_form_and_binary_frames(broker):
    bus = _bus()
    with ws_bridge(broker, bus) as app, open_client(ws_url(app, "/" + ROOT)) as client:
        recv_json(client)
        client.send("SENDCOMMAND," + commands.get_serial_number(0x11).hex().upper())
        recv_until(client, is_response(GET_SERIAL, 0x11))
        raw = commands.get_firmware_id(0x12)
        client.send(raw)  # bytes: a binary frame
        response = messages(recv_until(client, is_response(GET_SERIAL, 0x12)))[-1]
        assert commands.parse_firmware_id(response)
        assert raw in list(bus.readers[0].host_messages)


def test_two_clients_see_every_message_in_order(broker):
    bus = _bus()
    with ws_bridge(broker, bus) as app, \
            open_client(ws_url(app, "/" + ROOT)) as one, \
            open_client(ws_url(app, "/")) as two:
        recv_json(one)
        recv_json(two)
        one.send(commands.start_transaction(0x21).hex())
        recv_until(one, is_response(0x1001, 0x21))
        bus.readers[0].present_card("insert")
        two.send(commands.get_serial_number(0x22).hex())

        def last(frame):
            return is_response(GET_SERIAL, 0x22)(frame)

        seen_one = recv_until(one, last)
        seen_two = recv_until(two, last)
        # ``one`` already read the start-transaction response; ``two`` reads it now: after it,
        # both got the same frames in the same order (card notifications, then the response).
        assert messages(seen_two)[0].command_id == 0x1001
        assert seen_two[1:] == seen_one
        assert len(messages(seen_one)) >= 3


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not hex at all", "not_hex"),
        ("AA0081040113100884021", "odd_length"),
        ("", "empty"),
        ("0102030405", "not_mms"),
        ("AA00810482131008820400000000", "not_request"),  # a device response
        (b"\x01\x02\x03", "not_mms"),                      # binary, not MMS
        (bytes.fromhex("AA0081"), "not_mms"),              # binary, truncated MMS
    ],
)
def test_bad_frames_get_error_frames_and_never_reach_the_reader(broker, frame, reason):
    bus = _bus()
    with ws_bridge(broker, bus) as app, open_client(ws_url(app, "/" + ROOT)) as client:
        recv_json(client)
        before = list(bus.readers[0].host_messages)
        client.send(frame)
        error = recv_json(client)
        assert error["type"] == "error"
        assert error["reason"] == reason
        assert error["detail"]
        assert list(bus.readers[0].host_messages) == before
        assert _value(app.metrics.websocket_rejected_frames, reason) == 1
        # The connection stays usable.
        client.send(commands.get_serial_number(0x31).hex())
        recv_until(client, is_response(GET_SERIAL, 0x31))


def test_unplug_and_replug_status_frames_client_stays(broker):
    bus = _bus()
    with ws_bridge(broker, bus) as app, open_client(ws_url(app, "/" + ROOT)) as client:
        assert status_of(client.recv(timeout=5)) == "connected"
        bus.unplug(0)
        frames = recv_until(client, lambda f: status_of(f) == "disconnected", timeout=5)
        assert json.loads(frames[-1])["root"] == ROOT
        client.send(commands.get_serial_number(0x41).hex())
        assert recv_json(client)["reason"] == "reader_absent"
        bus.replug(0)
        recv_until(client, lambda f: status_of(f) == "connected", timeout=10)
        client.send(commands.get_serial_number(0x42).hex())
        recv_until(client, is_response(GET_SERIAL, 0x42))
        assert all(not is_json(f) or json.loads(f)["type"] == "status" for f in frames)


def test_root_path_with_one_reader_and_with_two(broker):
    with ws_bridge(broker, _bus()) as app, open_client(ws_url(app, "/")) as client:
        assert recv_json(client)["root"] == ROOT
    with ws_bridge(broker, _bus(SERIAL, OTHER)) as app:
        client = open_client(ws_url(app, "/"))
        error = recv_json(client)
        assert error["reason"] == "several_readers"
        assert sorted(error["readers"]) == sorted([ROOT, OTHER_ROOT])
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=5)
        assert client.close_code == 1008
        # Each reader still has its own path.
        with open_client(ws_url(app, "/" + OTHER_ROOT)) as other:
            assert recv_json(other)["root"] == OTHER_ROOT
            other.send(commands.get_serial_number(0x51).hex())
            response = messages(recv_until(other, is_response(GET_SERIAL, 0x51)))[-1]
            assert commands.parse_serial_number(response) == OTHER


def test_unknown_root_is_refused_with_the_list(broker):
    with ws_bridge(broker, _bus()) as app:
        client = open_client(ws_url(app, "/MagTek/Device/DynaFlexII/BFFFFFF"))
        error = recv_json(client)
        assert (error["reason"], error["readers"]) == ("unknown_reader", [ROOT])
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=5)


def test_max_clients_per_reader(broker):
    with ws_bridge(broker, _bus(), max_clients_per_reader=1) as app, \
            open_client(ws_url(app, "/")) as first:
        recv_json(first)
        second = open_client(ws_url(app, "/"))
        assert recv_json(second)["reason"] == "too_many_clients"
        with pytest.raises(ConnectionClosed):
            second.recv(timeout=5)
        assert second.close_code == 1013
        first.send(commands.get_serial_number(0x61).hex())
        recv_until(first, is_response(GET_SERIAL, 0x61))


def _http(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_readers_commands_and_ui_documents(broker):
    with ws_bridge(broker, _bus(SERIAL, OTHER)) as app:
        base = ws_url(app, "").replace("ws://", "http://")
        status, _, body = _http(base + "/readers")
        assert status == 200
        assert json.loads(body) == {"readers": [{"root": ROOT, "path": "/" + ROOT},
                                                {"root": OTHER_ROOT, "path": "/" + OTHER_ROOT}]}
        status, _, body = _http(base + "/commands")
        listed = {c["label"]: c["command"] for c in json.loads(body)["commands"]}
        assert listed["Get serial number"] == (
            "SENDCOMMAND," + commands.get_serial_number().hex().upper())
        # The demo guide's own Get SN string (seeds/websocket-mms-demo-guide.txt).
        assert listed["Get serial number"] == (
            "SENDCOMMAND,AA00810401B5D1018418D10181072B06010401F6098501028704020101018902C100")
        status, headers, body = _http(base + "/ui")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        # Nothing loaded from elsewhere: no CDN, no external script or style sheet.
        assert b"<script>" in body
        assert not any(marker in body for marker in (b"://", b"src=", b"href=", b"@import"))


def test_token_auth_header_or_query(broker, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456\n")
    auth = {"mode": "token", "token_file": str(token_file)}
    with ws_bridge(broker, _bus(), auth=auth) as app:
        url = ws_url(app, "/")
        for headers, suffix in (({}, ""), ({"Authorization": "Bearer nope"}, ""),
                                ({}, "?token=nope")):
            with pytest.raises(Exception) as refused:
                open_client(url + suffix, headers=headers)
            assert refused.value.response.status_code == 401
        with open_client(url, headers={"Authorization": "Bearer s3cret-token-0123456"}) as client:
            assert recv_json(client)["status"] == "connected"
        with open_client(url + "?token=s3cret-token-0123456") as client:
            assert recv_json(client)["status"] == "connected"
        status, _, _ = _http(url.replace("ws://", "http://") + "readers")
        assert status == 401
        assert _value(app.metrics.websocket_refused, "auth") == 4


def test_basic_auth(broker, tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text("pa55word")
    auth = {"mode": "basic", "username": "pos", "password_file": str(password_file)}
    with ws_bridge(broker, _bus(), auth=auth) as app:
        url = ws_url(app, "/")
        with pytest.raises(Exception) as refused:
            open_client(url)
        assert refused.value.response.status_code == 401
        assert "Basic" in refused.value.response.headers["WWW-Authenticate"]
        with pytest.raises(Exception) as refused:
            open_client(url.replace("ws://", "ws://pos:wrong@"))
        assert refused.value.response.status_code == 401
        with open_client(url.replace("ws://", "ws://pos:pa55word@")) as client:
            assert recv_json(client)["status"] == "connected"


def test_origin_check(broker):
    with ws_bridge(broker, _bus(), allowed_origins=["https://pos.example.com"]) as app:
        url = ws_url(app, "/")
        with pytest.raises(Exception) as refused:
            open_client(url, origin="https://evil.example.net")
        assert refused.value.response.status_code == 403
        # DNS rebinding: a foreign name that happens to match the Host header is not ours.
        with pytest.raises(Exception) as refused:
            open_client(url, origin=f"http://rebind.example.net:{app.websocket.port}",
                        headers={"Host": f"rebind.example.net:{app.websocket.port}"})
        assert refused.value.response.status_code == 403
        with open_client(url, origin="https://pos.example.com") as client:
            assert recv_json(client)["status"] == "connected"
        # The bridge's own page (/ui) and clients that are not browsers (no Origin).
        with open_client(url, origin=f"http://127.0.0.1:{app.websocket.port}") as client:
            assert recv_json(client)["status"] == "connected"
        with open_client(url) as client:
            assert recv_json(client)["status"] == "connected"
        assert _value(app.metrics.websocket_refused, "origin") == 2


def test_slow_client_is_cut_off_while_a_fast_one_keeps_up(broker):
    bus = _bus()
    limit = 32
    with ws_bridge(broker, bus, client_queue_limit=limit) as app, \
            open_client(ws_url(app, "/"), max_queue=None) as fast, \
            open_client(ws_url(app, "/"), max_queue=1, rcvbuf=4096) as slow:
        recv_json(fast)
        # Big, incompressible notifications, so the slow client's socket buffers fill after a
        # few dozen; in batches the fast client reads before the next, so it never lags far.
        sent = [build_notification(0x0101, bytes([0x20, 0x01, 0x04, 0x00]), os.urandom(2000))
                for _ in range(300)]
        expected = [m.hex().upper() for m in sent]
        received: list[object] = []
        for start in range(0, len(sent), 10):
            for message in sent[start:start + 10]:
                bus.readers[0].emit_message(message)
            received += recv_until(fast, lambda f, s=start: f == expected[s + 9], timeout=10)
        assert [f for f in received if not is_json(f)] == expected
        assert wait_until(lambda: _value(app.metrics.websocket_slow_disconnects) == 1, 10)
        # The slow client gets what was already on its way, in order, then the close reason.
        late = drain_until_closed(slow)
        hexes = [f for f in late if not is_json(f)]
        assert len(hexes) < len(expected)
        assert hexes == expected[:len(hexes)]
        assert slow.close_code == 1008
        assert "too slow" in (slow.close_reason or "")
        # The fast client still works, alone on the reader.
        fast.send(commands.get_serial_number(0x71).hex())
        recv_until(fast, is_response(GET_SERIAL, 0x71))
        assert _value(app.metrics.websocket_clients) == 1


def test_stop_closes_clients_going_away(broker):
    with ws_bridge(broker, _bus()) as app:
        client = open_client(ws_url(app, "/"))
        recv_json(client)
        app.stop()
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=10)
        assert client.close_code == 1001


def test_device_responses_are_the_mms_message_payloads(broker, probe_factory):
    """What a WebSocket client sees is exactly what MQTT consumers get on MMSMessage."""
    with ws_bridge(broker, _bus()) as app, open_client(ws_url(app, "/")) as client:
        probe = probe_factory(f"{ROOT}/MMSMessage")
        recv_json(client)
        client.send(commands.get_serial_number(0x77).hex())
        frames = recv_until(client, is_response(GET_SERIAL, 0x77))
        mqtt = probe.wait_for(f"{ROOT}/MMSMessage", timeout=5)
        assert mqtt.payload.decode() == frames[-1]
        assert messages(frames)[-1].message_type == MessageType.DEVICE_RESPONSE


def test_wss_with_the_configured_certificate(broker, test_pki):
    tls = {"cert_file": str(test_pki.server_cert), "key_file": str(test_pki.server_key)}
    with ws_bridge(broker, _bus(), tls=tls) as app:
        assert app.websocket.url.startswith("wss://")
        context = ssl.create_default_context(cafile=str(test_pki.ca_file))
        url = f"wss://127.0.0.1:{app.websocket.port}/?frames=json"  # opt in by query
        with connect(url, ssl=context, open_timeout=5, proxy=None) as client:
            assert recv_json(client)["status"] == "connected"
            client.send(commands.get_serial_number(0x81).hex())
            recv_until(client, is_response(GET_SERIAL, 0x81))
        # A plain ws:// client gets no WebSocket out of a TLS listener.
        with pytest.raises((OSError, InvalidMessage, ConnectionClosed)):
            open_client(f"ws://127.0.0.1:{app.websocket.port}/")


def test_port_in_use_is_a_config_error_naming_the_key(broker):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = bridge_settings(broker, websocket={"enabled": True, "port": port})
        app = BridgeApp(settings, backend=_bus(), metrics=Metrics(CollectorRegistry()))
        with pytest.raises(ConfigError, match=r"websocket\.port"):
            app.start()
        app.stop()
