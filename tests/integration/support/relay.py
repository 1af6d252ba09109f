"""``TcpRelay``: a loopback TCP forwarder that a test can cut and restore, to break one
network link (say, a store broker's uplink to the central broker) while both ends stay up.

While cut, every relayed connection is closed at once (both ends see the TCP connection
end) and new connections are refused (the listening socket is closed), as when a store's
WAN link is down. ``restore()`` listens on the same port again.

``blackhole()`` is the other kind of partition: connections stay open and new ones are
accepted, but every byte is read and thrown away (no FIN, no RST), so only keepalives can tell.
``heal()`` forwards again and cuts the connections that lived through it, as a stateful
firewall would have timed them out.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType
from typing import Final

from tests.integration.support.broker import HOST

UPSTREAM_CONNECT_TIMEOUT_S: Final = 2.0
SEND_TIMEOUT_S: Final = 5.0
SELECT_INTERVAL_S: Final = 0.05
CHUNK: Final = 65536
JOIN_TIMEOUT_S: Final = 2.0


class TcpRelay:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``, one thread for all.

    Attributes:
        host: always 127.0.0.1.
        port: where clients connect (kept across ``cut()``/``restore()``).
        accepted: connections relayed so far (both ends connected).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.host = HOST
        self.target = (target_host, target_port)
        self.accepted = 0
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._peers: dict[socket.socket, socket.socket] = {}
        self._listener: socket.socket | None = None
        self._closed = False
        self._blackholed = False
        self.port = self._listen(0)
        self._thread = threading.Thread(target=self._run, name=f"tcp-relay-{self.port}",
                                        daemon=True)
        self._thread.start()

    # -- control (test thread) ----------------------------------------------------------

    @property
    def is_cut(self) -> bool:
        """True between ``cut()`` and ``restore()``."""
        with self._lock:
            return self._listener is None

    @property
    def active(self) -> int:
        """Relayed connections open right now."""
        with self._lock:
            return len(self._peers) // 2

    def cut(self) -> None:
        """Close every relayed connection and refuse new ones; idempotent."""
        with self._lock:
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
                self._listener = None
            for sock in list(self._peers):
                self._drop(sock)

    def blackhole(self) -> None:
        """Discard every byte from now on, in both directions; keep accepting."""
        with self._lock:
            self._blackholed = True

    def heal(self) -> None:
        """Forward again; connections that saw the black hole are closed."""
        with self._lock:
            self._blackholed = False
            for sock in list(self._peers):
                self._drop(sock)

    def restore(self) -> None:
        """Accept connections on the same port again; idempotent."""
        with self._lock:
            if self._listener is None and not self._closed:
                self._listen(self.port)

    def close(self) -> None:
        """Cut, then stop the thread; idempotent."""
        self.cut()
        with self._lock:
            self._closed = True
        self._thread.join(JOIN_TIMEOUT_S)
        self._selector.close()

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _listen(self, port: int) -> int:
        """Bind and register a listening socket (caller holds the lock, or __init__)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Relayed connections left in TIME_WAIT on this port must not block a restore.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, port))
        listener.listen(16)
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ)
        self._listener = listener
        return int(listener.getsockname()[1])

    def _drop(self, sock: socket.socket) -> None:
        """Close ``sock`` and its peer (caller holds the lock)."""
        peer = self._peers.pop(sock, None)
        for end in (sock, peer):
            if end is None:
                continue
            self._peers.pop(end, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(end)
            end.close()

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except BlockingIOError:
            return
        if self._blackholed:
            # Accepted by the local stack, never answered: the client's own peer.
            client.setblocking(False)
            self._selector.register(client, selectors.EVENT_READ)
            self._peers[client] = client
            return
        try:
            upstream = socket.create_connection(self.target, UPSTREAM_CONNECT_TIMEOUT_S)
        except OSError:
            client.close()  # the far end is down: the client sees its connection end
            return
        for end in (client, upstream):
            end.settimeout(SEND_TIMEOUT_S)
            end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._selector.register(end, selectors.EVENT_READ)
        self._peers[client] = upstream
        self._peers[upstream] = client
        self.accepted += 1

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers[sock]
        try:
            data = sock.recv(CHUNK)
            if data:
                if not self._blackholed and peer is not sock:
                    peer.sendall(data)
                return
        except OSError:
            pass
        self._drop(sock)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
            events = self._selector.select(SELECT_INTERVAL_S)
            with self._lock:
                for key, _ in events:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept(sock)
                    elif sock in self._peers:
                        self._forward(sock)


__all__ = ["TcpRelay"]
