"""The WebSocket endpoint: an asyncio server (the ``websockets`` library) in its own thread.

One named thread (``websocket``) runs an event loop that owns every client. Paths:

- ``/<root>`` (e.g. ``/MagTek/Device/DynaFlexII/B123456``): a WebSocket following that reader,
  across unplug and replug; ``/``: the only reader, when exactly one is attached.
- ``/ui``: the test page; ``/readers`` and ``/commands``: JSON for it.

Client -> bridge: a text frame with an MMS command as hex (or ``SENDCOMMAND,<hex>``), or a
binary frame with raw MMS bytes; each goes through ``ReaderSession.submit`` like an MQTT
``SendCommand``. Bridge -> client: every reader message as upper-case hex, in order, and
nothing else (MagTek's wire format); JSON status and error frames only for clients that ask
(``bridge.websocket.frames``: what a refused command gets on each kind of connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Final, Protocol
from urllib.parse import unquote, urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from bridge.config import WebSocketSettings
from bridge.errors import ConfigError
from bridge.intake import Rejection
from bridge.metrics import Metrics
from bridge.session import ReaderSession
from bridge.throttle import Throttle
from bridge.websocket.access import AccessPolicy, Refusal
from bridge.websocket.frames import refusal_response, select_json
from bridge.websocket.hub import CLOSE_GRACE, Client, ClientHub, error_frame
from bridge.websocket.pages import commands_document, readers_document, ui_page

_log = structlog.get_logger("bridge.websocket")

START_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 5.0
# Kernel send buffer per client: small, so that what a stalled client leaves unread piles up
# in its own queue (where client_queue_limit sees it), not megabytes deep in the socket.
SEND_BUFFER: Final = 64 * 1024
PING_INTERVAL: Final = 20.0  # a vanished client (no TCP reset) is noticed within 40 s
_CSP: Final = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "connect-src 'self' ws: wss:; frame-ancestors 'none'")
_POLICY_CODE: Final = 1008  # RFC 6455 §7.4.1
_TRY_LATER_CODE: Final = 1013


class ReaderDirectory(Protocol):
    """Where the endpoint finds readers (the ``Supervisor``)."""

    def connected_roots(self) -> list[str]: ...

    def session_for_root(self, root: str) -> ReaderSession | None: ...

    def known_root(self, root: str) -> bool: ...


class WebSocketEndpoint:
    """Serves WebSocket MMS clients until ``stop()``.

    Args:
        settings: the ``[websocket]`` section (secrets are read here).
        metrics: shared collectors.
        max_message_size: largest MMS message relayed (``readers.max_message_size``).
    """

    def __init__(self, settings: WebSocketSettings, *, metrics: Metrics,
                 max_message_size: int = 1 << 20) -> None:
        self._settings = settings
        self._metrics = metrics
        self._refusal_lines = Throttle(interval=1.0, burst=5)  # a flood is one line a second
        self._max_frame = 3 * max_message_size + 64  # hex text with whitespace (bridge.intake)
        auth = settings.auth
        self._policy = AccessPolicy(
            mode=auth.mode,
            token=auth.token_value() if auth.mode == "token" else None,
            username=auth.username,
            password=auth.password_value() if auth.mode == "basic" else None,
            allowed_origins=tuple(settings.allowed_origins),
            bind_address=settings.address,
            tls=settings.tls.cert_file is not None,
        )
        self.hub = ClientHub(metrics, queue_limit=settings.client_queue_limit,
                             max_clients=settings.max_clients_per_reader)
        self.port: int | None = None
        self._directory: ReaderDirectory | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: OSError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        scheme = "wss" if self._policy.tls else "ws"
        host = self._settings.address
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, directory: ReaderDirectory) -> None:
        """Listen (in the ``websocket`` thread); returns once the port is bound.

        Raises:
            ConfigError: the address or port cannot be bound, or the TLS files do not load.
        """
        self._directory = directory
        self._thread = threading.Thread(target=self._run, name="websocket", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise ConfigError("websocket: the endpoint did not start in time")
        if self._failure is not None:
            address = f"{self._settings.address}:{self._settings.port}"
            raise ConfigError(f"websocket.port: cannot listen on {address}: {self._failure}")
        _log.info("websocket_listening", url=self.url, auth=self._policy.mode)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Close every client (1001 going away) and the listener; idempotent."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
        finally:
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stop = asyncio.Event()
        try:
            server = await serve(
                self._serve_client, self._settings.address, self._settings.port,
                process_request=self._process_request, ssl=self._tls_context(),
                select_subprotocol=_select_subprotocol,
                max_size=self._max_frame, close_timeout=CLOSE_GRACE,
                ping_interval=PING_INTERVAL, ping_timeout=PING_INTERVAL,
                server_header="magtek-bridge",
                # Off: loopback clients, small frames; saves CPU on a Pi for every client.
                compression=None,
            )
        except (OSError, ssl.SSLError) as exc:
            self._failure = exc if isinstance(exc, OSError) else OSError(str(exc))
            self._ready.set()
            return
        self.port = next(iter(server.sockets)).getsockname()[1]
        self._loop = loop
        self.hub.bind(loop)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            self.hub.bind(None)
            await self._close(server)

    async def _close(self, server: Server) -> None:
        server.close(close_connections=True)
        try:
            await asyncio.wait_for(
                asyncio.gather(server.wait_closed(), self.hub.settle()), STOP_TIMEOUT)
        except TimeoutError:
            _log.warning("websocket_stop_timeout")
        self._loop = None

    def _tls_context(self) -> ssl.SSLContext | None:
        tls = self._settings.tls
        if tls.cert_file is None or tls.key_file is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        return context

    # -- HTTP: access and the plain routes ------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request
                         ) -> Response | None:
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        refusal = self._policy.check(
            target=request.path,
            host=_header(request.headers, "Host"),
            origin=_header(request.headers, "Origin"),
            authorization=_header(request.headers, "Authorization"),
        )
        path = urlsplit(request.path).path
        if refusal is not None:
            return self._refuse(connection, refusal, path)
        assert self._directory is not None
        if path in ("/ui", "/ui/"):
            return _reply(connection, 200, ui_page().decode("utf-8"), "text/html; charset=utf-8",
                          (("Content-Security-Policy", _CSP),))
        if path == "/readers":
            return _reply(connection, 200, readers_document(self._directory.connected_roots()),
                          "application/json")
        if path == "/commands":
            return _reply(connection, 200, commands_document(), "application/json")
        if path == "/favicon.ico":
            return _reply(connection, 404, error_frame("not_found", "no icon"),
                          "application/json")
        return None  # a WebSocket for a reader (or a 426 from the library if not an upgrade)

    def _refuse(self, connection: ServerConnection, refusal: Refusal, path: str) -> Response:
        self._metrics.websocket_refused.labels(refusal.reason).inc()
        _log.warning("websocket_refused", reason=refusal.reason, detail=refusal.detail,
                     path=path, peer=_peer(connection))
        return _reply(connection, refusal.status, error_frame(refusal.reason, refusal.detail),
                      "application/json", refusal.headers)

    # -- WebSocket clients ----------------------------------------------------------------------

    async def _serve_client(self, connection: ServerConnection) -> None:
        assert self._directory is not None
        assert connection.request is not None
        json_frames = _wants_json(connection)
        root = await self._resolve(connection, json_frames)
        if root is None:
            return
        client = Client(connection, root, queue_limit=self.hub.queue_limit,
                        metrics=self._metrics, on_slow=self.hub.cut_off,
                        json_frames=json_frames)
        if not self.hub.attach(client):
            detail = f"{self.hub.max_clients} clients already follow this reader"
            await self._turn_away(connection, _TRY_LATER_CODE, "too_many_clients", detail,
                                  json_frames)
            return
        _log.info("websocket_client_connected", root=root, peer=_peer(connection),
                  clients=self.hub.clients_of(root), json_frames=json_frames)
        client.push_status(self._directory.session_for_root(root) is not None)
        pump = asyncio.create_task(client.pump(), name=f"websocket-send[{root}]")
        try:
            async for frame in connection:
                if not client.cut_off:
                    self._command(client, frame)
        except ConnectionClosed:
            pass
        finally:
            self.hub.detach(client)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            _log.info("websocket_client_disconnected", root=root, peer=_peer(connection),
                      code=connection.close_code)

    async def _resolve(self, connection: ServerConnection, json_frames: bool) -> str | None:
        """The root a new client follows, or ``None`` after telling it why there is none."""
        assert self._directory is not None and connection.request is not None
        path = unquote(urlsplit(connection.request.path).path)
        roots = self._directory.connected_roots()
        if path.strip("/") == "":
            if len(roots) == 1:
                return roots[0]
            reason = "no_reader" if not roots else "several_readers"
            detail = ("no reader is attached" if not roots else
                      f"{len(roots)} readers are attached: connect to /<root> of one")
            await self._turn_away(connection, _POLICY_CODE, reason, detail, json_frames,
                                  readers=roots)
            return None
        root = path.strip("/")
        if root in roots or self._directory.known_root(root):
            return root
        await self._turn_away(connection, _POLICY_CODE, "unknown_reader",
                              f"no reader of this bridge has the root {root[:100]}",
                              json_frames, readers=roots)
        return None

    async def _turn_away(self, connection: ServerConnection, code: int, reason: str,
                         detail: str, json_frames: bool, **extra: object) -> None:
        """Close a connection we cannot serve; the close reason says why. Only a client that
        asked for JSON frames gets the detail (and the reader list) as a frame first."""
        self._metrics.websocket_refused.labels(reason).inc()
        _log.warning("websocket_refused", reason=reason, detail=detail, peer=_peer(connection))
        if json_frames:
            with contextlib.suppress(ConnectionClosed):
                await connection.send(error_frame(reason, detail, **extra))
                self._metrics.websocket_frame("out")
        await connection.close(code, reason)

    def _command(self, client: Client, frame: str | bytes) -> None:
        """Submit one client frame to its reader. A refusal is logged and counted, and goes
        back as a JSON error frame, or to a plain client as an MMS failure response (or not
        at all: ``bridge.websocket.frames``)."""
        assert self._directory is not None
        self._metrics.websocket_frame("in")
        result: object
        if isinstance(frame, bytes) and frame[:1] != b"\xaa":
            result = Rejection("not_mms", "a binary frame holds raw MMS bytes (first byte 0xAA)")
        else:
            payload = frame.encode("utf-8") if isinstance(frame, str) else frame
            session = self._directory.session_for_root(client.root)
            if session is None:
                result = Rejection("reader_absent", "the reader is not connected")
            else:
                result = session.submit(payload)
        if isinstance(result, Rejection):
            self._metrics.websocket_rejected(result.reason)
            held = self._refusal_lines.allow(time.monotonic())
            if held is not None:
                _log.warning("websocket_command_rejected", root=client.root,
                             reason=result.reason, size=len(frame), suppressed=held,
                             json_frames=client.json_frames)
            if client.json_frames:
                client.push(error_frame(result.reason, result.detail))
                return
            answer = refusal_response(frame, result)
            if answer is not None:
                client.push(answer)


def _wants_json(connection: ServerConnection) -> bool:
    assert connection.request is not None
    offered = tuple(connection.request.headers.get_all("Sec-WebSocket-Protocol"))
    names = tuple(p.strip() for value in offered for p in value.split(","))
    return select_json(connection.request.path, names)[0]


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]
                        ) -> Subprotocol | None:
    # Our one subprotocol when offered; none otherwise (the library's default would refuse
    # clients that offer none, MagTek's among them).
    wanted = select_json("", tuple(offered))[1]
    return Subprotocol(wanted) if wanted is not None else None


def _header(headers: Headers, name: str) -> str | None:
    # Repeated headers are joined, so a second Origin cannot hide behind the first.
    values = headers.get_all(name)
    return ", ".join(values) if values else None


def _reply(connection: ServerConnection, status: int, body: str, content_type: str,
           headers: tuple[tuple[str, str], ...] = ()) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    for name, value in headers:
        response.headers[name] = value
    return response


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


__all__ = ["ReaderDirectory", "WebSocketEndpoint"]
