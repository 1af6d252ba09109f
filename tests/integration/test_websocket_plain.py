"""The WebSocket endpoint as MagTek's own WebSocket client sees it (default settings).

``MagTekStyleClient`` does what MagTek's client class does with every frame: a text frame is
MMS hex, parsed as an MMS message. Here each one is parsed with the project's parser and must
be a well-formed message; anything else (a JSON frame, a binary frame, stray text) fails the
test. Its ``send_command`` waits, like MagTek's ``sendCommand``, for the next device response
of any kind.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from bridge.mms import Message, MessageType, commands, parse_message
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import wait_until
from tests.integration.wsclient import open_client, ws_bridge, ws_url

pytestmark = pytest.mark.integration

SERIAL = "B54E05A"
OTHER = "B654321"
ROOT = f"MagTek/Device/DynaFlexII/{SERIAL}"
_HEX = re.compile(r"^(?:[0-9A-F]{2})+$")


class NotMmsError(AssertionError):
    pass


class MagTekStyleClient:
    """A plain client: every frame it receives must be one MMS message as hex text."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.received: list[Message] = []

    def _take(self, frame: str | bytes) -> Message:
        if not isinstance(frame, str) or not _HEX.match(frame):
            raise NotMmsError(f"not an MMS hex frame: {frame[:80]!r}")
        try:
            message = parse_message(bytes.fromhex(frame))
        except Exception as exc:
            raise NotMmsError(f"unparseable MMS frame {frame[:80]!r}: {exc}") from exc
        self.received.append(message)
        return message

    def next_message(self, timeout: float = 10.0) -> Message:
        return self._take(self.connection.recv(timeout=timeout))

    def quiet(self, seconds: float) -> None:
        """Whatever arrives within ``seconds`` must still be MMS (nothing at all is fine)."""
        try:
            while True:
                self._take(self.connection.recv(timeout=seconds))
        except TimeoutError:
            return

    def send_command(self, text: str, timeout: float = 10.0) -> Message:
        """Send and wait for the next device response, as MagTek's ``sendCommand`` does."""
        self.connection.send(text)
        while True:
            message = self.next_message(timeout)
            if message.message_type == MessageType.DEVICE_RESPONSE:
                return message

    def until(self, notification_id: int, detail_hex: str, timeout: float = 10.0
              ) -> list[Message]:
        seen: list[Message] = []
        while True:
            message = self.next_message(timeout)
            seen.append(message)
            if (message.message_type == MessageType.DEVICE_NOTIFICATION
                    and message.command_id == notification_id
                    and (message.notification_detail or b"").hex().upper() == detail_hex):
                return seen


def _plain(app: Any, path: str = "/") -> ClientConnection:
    return open_client(ws_url(app, path), json_frames=False)


def test_plain_client_sees_only_mms_across_commands_refusals_unplug_and_replug(broker):
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present="tap", present_delay=0)
    with ws_bridge(broker, bus) as app, _plain(app) as connection:
        client = MagTekStyleClient(connection)
        assert connection.subprotocol is None
        client.quiet(0.5)  # connect: no status frame
        assert client.received == []

        response = client.send_command(commands.get_serial_number(0x21).hex().upper())
        assert (response.ref, response.command_id) == (0x21, 0xD101)
        assert commands.parse_serial_number(response) == SERIAL

        # MagTek's separators are accepted like MagTek's client accepts them.
        colon = ":".join(f"{b:02X}" for b in commands.get_serial_number(0x22))
        assert client.send_command(colon).ref == 0x22

        started = client.send_command(commands.start_transaction().hex())
        assert started.status is not None and started.status.summary == 0x01
        client.until(0x0101, "20080302")  # the tap's batch data: the whole flow came as MMS

        # Refusals: what the bridge cannot read is not answered; a busy or absent reader is
        # answered with an MMS failure response to that very command.
        connection.send("not hex at all")
        connection.send(b"\x01\x02")
        client.quiet(0.5)
        bus.unplug(0)
        assert wait_until(lambda: app.supervisor.connected_roots() == [], 10)
        client.quiet(0.5)  # unplug: no status frame
        refused = client.send_command(commands.get_serial_number(0x41).hex())
        assert (refused.ref, refused.command_id) == (0x41, 0xD101)
        assert refused.status is not None and not refused.status.ok
        assert (refused.status.summary, refused.status.detail) == (0x80, 0x010109)

        bus.replug(0)
        assert wait_until(lambda: app.supervisor.connected_roots() == [ROOT], 10)
        client.quiet(0.5)  # replug: no status frame either
        again = client.send_command(commands.get_serial_number(0x42).hex())
        assert (again.ref, again.status.ok if again.status else None) == (0x42, True)
        rejected = app.metrics.registry.get_sample_value(
            "magtek_bridge_websocket_rejected_frames_total", {"reason": "not_hex"})
        assert rejected == 1


def test_plain_client_turned_away_gets_a_close_reason_and_no_frame(broker):
    bus = SimulatedBus(count=2, serials=[SERIAL, OTHER], auto_present=None)
    with ws_bridge(broker, bus) as app:
        for path, reason in (("/", "several_readers"),
                             ("/MagTek/Device/DynaFlexII/BFFFFFF", "unknown_reader")):
            connection = _plain(app, path)
            with pytest.raises(ConnectionClosed):
                frame = connection.recv(timeout=5)
                raise AssertionError(f"a plain client got a frame: {frame!r}")
            assert (connection.close_code, connection.close_reason) == (1008, reason)
