"""Fan-out of reader events to WebSocket clients, without ever making a reader wait.

``ClientHub`` is a ``ReaderObserver``: the session threads call it, and it only hands the event
to the endpoint's event loop (``call_soon_threadsafe``, which appends to a queue and returns).
Everything else (which clients follow which root, their queues) belongs to that loop.

Each client has its own queue of frames and its own sender task. A client whose queue holds
``queue_limit`` frames has fallen behind: it is cut off (close 1008 with a reason) instead of
growing the queue, so one stalled browser tab never holds back the reader or other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Final

import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from bridge.metrics import Metrics
from bridge.session import ReaderSession

_log = structlog.get_logger("bridge.websocket")

SLOW_CLIENT_CODE: Final = 1008  # RFC 6455 §7.4.1: policy violation
CLOSE_GRACE: Final = 5.0
"""Seconds a cut-off client gets to take the close frame before its socket is dropped."""


def status_frame(root: str, connected: bool) -> str:
    """The JSON frame telling clients of ``root`` that their reader came or went."""
    status = "connected" if connected else "disconnected"
    return json.dumps({"type": "status", "status": status, "root": root})


def error_frame(reason: str, detail: str, **extra: object) -> str:
    """The JSON frame answering a refused command (or connection)."""
    return json.dumps({"type": "error", "reason": reason, "detail": detail, **extra})


class Client:
    """One WebSocket client following one reader root (used on the loop thread only).

    Args:
        connection: the open WebSocket.
        root: the reader root it follows, across unplug and replug.
        queue_limit: frames that may wait for it before it counts as too slow.
        metrics: frames out are counted here.
        on_slow: called once when the client falls behind.
        json_frames: the client asked for JSON status/error frames (``bridge.websocket.frames``);
            otherwise it only ever gets MMS hex, like from a reader's own WebSocket.
    """

    def __init__(self, connection: ServerConnection, root: str, *, queue_limit: int,
                 metrics: Metrics, on_slow: Callable[[Client], None],
                 json_frames: bool = False) -> None:
        self.connection = connection
        self.root = root
        self.json_frames = json_frames
        self._limit = queue_limit
        self._metrics = metrics
        self._on_slow = on_slow
        self._frames: asyncio.Queue[str] = asyncio.Queue()
        self.cut_off = False
        self._connected: bool | None = None

    def push_status(self, connected: bool) -> None:
        """Queue a status frame, unless it repeats the last one this client got (the first
        one, sent on attach, can cross the reader's own connect event). Plain clients get
        none: MagTek's parser would read it as a garbage MMS message."""
        if self.json_frames and connected is not self._connected:
            self._connected = connected
            self.push(status_frame(self.root, connected))

    def push(self, frame: str) -> None:
        """Queue a frame; never waits. Past the limit the client is cut off instead."""
        if self.cut_off:
            return
        if self._frames.qsize() >= self._limit:
            self.cut_off = True
            self._on_slow(self)
            return
        self._frames.put_nowait(frame)

    async def pump(self) -> None:
        """Send queued frames in order until the connection closes (or we are cancelled)."""
        while True:
            frame = await self._frames.get()
            try:
                await self.connection.send(frame)
            except ConnectionClosed:
                return
            self._metrics.websocket_frame("out")


class ClientHub:
    """Follows every reader (as a ``ReaderObserver``) and feeds the clients of each root.

    Args:
        metrics: shared collectors.
        queue_limit: per-client bound (``websocket.client_queue_limit``).
        max_clients: clients at once per root (``websocket.max_clients_per_reader``).
    """

    def __init__(self, metrics: Metrics, *, queue_limit: int, max_clients: int) -> None:
        self._metrics = metrics
        self.queue_limit = queue_limit
        self.max_clients = max_clients
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: dict[str, list[Client]] = {}
        # Roots with clients, read without a lock by the session threads (an atomic swap).
        self._watched: frozenset[str] = frozenset()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- reader side: any thread, must not block ------------------------------------------------

    def reader_connected(self, session: ReaderSession) -> None:
        self._post(session, True)

    def reader_message(self, session: ReaderSession, payload: bytes) -> None:
        self._post(session, payload.decode("ascii"))

    def reader_disconnected(self, session: ReaderSession) -> None:
        self._post(session, False)

    def _post(self, session: ReaderSession, event: str | bool) -> None:
        """Hand ``event`` (a message's hex, or the reader's status) to the loop."""
        loop = self._loop
        topics = session.topics
        if loop is None or topics is None or topics.root not in self._watched:
            return
        # RuntimeError: the loop closed while the endpoint stops; nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._deliver, topics.root, event)

    # -- loop side ------------------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Start (a loop) or stop (``None``) taking reader events."""
        self._loop = loop

    def attach(self, client: Client) -> bool:
        """Add a client to its root; False when the root already has ``max_clients``."""
        clients = self._clients.setdefault(client.root, [])
        if len(clients) >= self.max_clients:
            return False
        clients.append(client)
        self._metrics.websocket_clients.inc()
        self._watched = frozenset(self._clients)
        return True

    def detach(self, client: Client) -> None:
        clients = self._clients.get(client.root, [])
        if client not in clients:
            return
        clients.remove(client)
        self._metrics.websocket_clients.dec()
        if not clients:
            del self._clients[client.root]
        self._watched = frozenset(self._clients)

    def clients_of(self, root: str) -> int:
        return len(self._clients.get(root, ()))

    def _deliver(self, root: str, event: str | bool) -> None:
        for client in list(self._clients.get(root, ())):
            if isinstance(event, bool):
                client.push_status(event)
            else:
                client.push(event)

    def cut_off(self, client: Client) -> None:
        """A client fell ``queue_limit`` frames behind: detach it and close it with a reason."""
        self.detach(client)
        self._metrics.websocket_slow_disconnects.inc()
        _log.warning("websocket_client_too_slow", root=client.root,
                     queue_limit=self.queue_limit)
        task = asyncio.get_running_loop().create_task(
            _close_slow(client.connection, self.queue_limit), name="websocket-cut-off")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Let the closes of cut-off clients finish (each is bounded by ``CLOSE_GRACE``)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _close_slow(connection: ServerConnection, limit: int) -> None:
    # The close frame goes after what is already buffered; a client that never reads again
    # does not get to hold the socket past the grace period.
    reason = f"client too slow: more than {limit} messages waiting"
    try:
        await asyncio.wait_for(connection.close(SLOW_CLIENT_CODE, reason), CLOSE_GRACE)
    except TimeoutError:
        connection.transport.abort()


__all__ = ["Client", "ClientHub", "error_frame", "status_frame"]
