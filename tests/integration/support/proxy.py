"""A loopback TCP proxy that can black-hole traffic: a network partition without stopping
the broker (the peers see no FIN, no RST; bytes simply stop arriving)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

from tests.integration.support.broker import HOST


class BlackHoleProxy:
    def __init__(self, upstream_port: int) -> None:
        self._upstream = (HOST, upstream_port)
        self._listener = socket.create_server((HOST, 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self.blackholed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blackhole-proxy", daemon=True)
        self._thread.start()

    def blackhole(self) -> None:
        """From now on, every byte in either direction is read and thrown away."""
        self.blackholed = True

    def heal(self) -> None:
        """Forward again; connections that lived through the partition are cut (as a
        stateful firewall would after its timeout), so clients reconnect."""
        with self._lock:
            self.blackholed = False
            for sock in list(self._pairs):
                self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        peer = self._pairs.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            self._pairs.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            s.close()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        if self.blackholed:
            # A partition: accepted by the local stack, never answered.
            client.setblocking(False)
            self._pairs[client] = client
            self._selector.register(client, selectors.EVENT_READ, None)
            return
        try:
            server = socket.create_connection(self._upstream, timeout=2)
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._selector.register(s, selectors.EVENT_READ, None)
        self._pairs[client] = server
        self._pairs[server] = client

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with self._lock:
                    if sock is self._listener:
                        self._accept()
                        continue
                    if sock not in self._pairs:
                        continue
                    try:
                        data = sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self._close(sock)
                        continue
                    peer = self._pairs[sock]
                    if self.blackholed or peer is sock:
                        continue
                    try:
                        peer.setblocking(True)
                        peer.sendall(data)
                        peer.setblocking(False)
                    except OSError:
                        self._close(sock)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for sock in list(self._pairs):
                self._close(sock)
        self._selector.close()
        self._listener.close()
