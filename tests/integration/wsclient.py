"""WebSocket clients for the endpoint tests: the ``websockets`` library's own sync client."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bridge.app import BridgeApp
from bridge.mms import Message, parse_message
from bridge.transport.simulated import SimulatedBus
from bridge.websocket.frames import JSON_SUBPROTOCOL
from tests.integration.harness import running_bridge, wait_until

Frame = str | bytes


def ws_url(app: BridgeApp, path: str = "/") -> str:
    assert app.websocket is not None and app.websocket.port is not None
    return f"ws://127.0.0.1:{app.websocket.port}{path}"


@contextmanager
def ws_bridge(broker: Any, bus: SimulatedBus, **websocket: Any
              ) -> Iterator[BridgeApp]:
    """A bridge with the WebSocket endpoint on a free loopback port; every reader of ``bus``
    identified before it is handed over."""
    options = {"enabled": True, "address": "127.0.0.1", "port": 0, **websocket}
    with running_bridge(broker, bus=bus, websocket=options) as (app, _):
        wanted = sum(1 for reader in bus.readers if reader.plugged)
        assert wait_until(lambda: len(app.supervisor.connected_roots()) == wanted, 10), (
            "readers were not identified in time")
        yield app


def open_client(url: str, *, headers: Mapping[str, str] | None = None,
                origin: str | None = None, max_queue: int | None = 1024,
                rcvbuf: int | None = None, json_frames: bool = True) -> ClientConnection:
    """Connect (5 s handshake bound); ``rcvbuf`` shrinks the socket's receive buffer first.

    ``json_frames`` asks for the bridge's JSON status/error frames (the subprotocol); without
    it the client is a plain one, served MagTek's wire format only.
    """
    sock = None
    if rcvbuf is not None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(5)
        host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        sock.connect((host, int(port)))
        sock.settimeout(None)
    return connect(url, sock=sock, additional_headers=dict(headers or {}),
                   origin=origin,  # type: ignore[arg-type]
                   open_timeout=5, close_timeout=5, max_queue=max_queue, proxy=None,
                   compression=None, max_size=None,
                   subprotocols=[Subprotocol(JSON_SUBPROTOCOL)] if json_frames else None)


def recv_until(client: ClientConnection, done: Callable[[Frame], bool],
               timeout: float = 10.0) -> list[Frame]:
    """Every frame up to and including the first one for which ``done`` is true."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no matching frame in {timeout} s; got {frames[-5:]!r}")
        frame = client.recv(timeout=remaining)
        frames.append(frame)
        if done(frame):
            return frames


def recv_json(client: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    frame = client.recv(timeout=timeout)
    assert isinstance(frame, str) and frame.startswith("{"), frame
    return dict(json.loads(frame))


def is_json(frame: Frame) -> bool:
    return isinstance(frame, str) and frame.startswith("{")


def status_of(frame: Frame) -> str | None:
    return json.loads(frame).get("status") if is_json(frame) else None


def messages(frames: list[Frame]) -> list[Message]:
    """The reader messages among ``frames`` (upper-case hex text), parsed."""
    out = []
    for frame in frames:
        if isinstance(frame, str) and not is_json(frame):
            assert frame == frame.upper()
            out.append(parse_message(bytes.fromhex(frame)))
    return out


def is_response(command_id: int, ref: int) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        parsed = messages([frame])
        return bool(parsed) and parsed[0].is_response and (
            parsed[0].command_id, parsed[0].ref) == (command_id, ref)
    return check


def drain_until_closed(client: ClientConnection, timeout: float = 15.0) -> list[Frame]:
    """Read everything left until the connection closes; the frames read."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            frames.append(client.recv(timeout=max(0.01, deadline - time.monotonic())))
        except ConnectionClosed:
            return frames


__all__ = [
    "drain_until_closed",
    "is_json",
    "is_response",
    "messages",
    "open_client",
    "recv_json",
    "recv_until",
    "status_of",
    "ws_bridge",
    "ws_url",
]
