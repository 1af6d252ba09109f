"""One MQTT connection's socket side: opening it (blocking, on the connector thread) and, once
open, its non-blocking reads and writes, packet identifiers, in-flight window and keepalive
(the I/O loop's thread only, so no locks).

``MqttLink`` decides what to send and what a packet means; this module only moves bytes.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections import deque
from typing import Final

from bridge.mqtt.packets import PINGREQ_PACKET, Packet, PacketReader

CONNECT_TIMEOUT: Final = 5.0  # TCP connect and TLS handshake, each
_RECV: Final = 65536
_NO_DATA: Final = (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                   ssl.SSLWantWriteError)


class ConnectionClosed(Exception):  # noqa: N818 - what happened, not an error of ours
    """The broker closed the connection (EOF)."""


def open_socket(host: str, port: int, context: ssl.SSLContext | None,
                connect_packet: bytes) -> socket.socket:
    """TCP connect, TLS handshake when ``context``, then CONNECT written: blocking calls, for
    the connector thread. Returns the socket non-blocking, ready for the loop; raises what
    failed (the caller says why in an operator's words) and leaves no descriptor behind."""
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    try:
        # Small publishes must not wait for the broker's delayed ACK (Nagle: ~40 ms a round).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host)
        try:
            sock.sendall(connect_packet)
        except OSError as exc:
            raise _alert_behind(sock, exc) from exc
        sock.setblocking(False)
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return sock


def _alert_behind(sock: socket.socket, failure: OSError) -> OSError:
    """With TLS 1.3 a broker refuses our client certificate after the handshake: its alert
    may already wait in the socket when writing CONNECT fails with a bare EOF. The alert
    says why; the EOF does not."""
    if not isinstance(sock, ssl.SSLSocket):
        return failure
    try:
        sock.settimeout(1.0)
        sock.recv(1)
    except ssl.SSLError as alert:
        if not isinstance(alert, ssl.SSLEOFError):
            return alert
    except OSError:
        pass
    return failure


class Connection:
    """An open connection on the I/O loop.

    Publishes with QoS > 0 hold a packet identifier until acknowledged; at most ``window`` are
    in flight (the broker's Receive Maximum), the rest wait here in order. Keepalive follows
    MQTT §3.1.2.10: a PINGREQ when either direction has been quiet for ``keepalive`` seconds,
    and the connection is dead when its answer has not come ``keepalive`` seconds later.
    """

    def __init__(self, sock: socket.socket, *, v5: bool, keepalive: float, now: float,
                 max_packet: int = 0) -> None:
        self.sock = sock
        self._tls = isinstance(sock, ssl.SSLSocket)
        self.reader = PacketReader(v5=v5, max_packet=max_packet)
        self.out = bytearray()
        self.keepalive = keepalive
        self.last_in = now
        self.last_out = now
        self.ping_sent: float | None = None
        self.window = 65535
        self.in_flight: set[int] = set()
        self._waiting: deque[tuple[int, bytes]] = deque()
        self._used: set[int] = set()  # identifiers in flight, waiting, or on a SUBSCRIBE
        self._mid = 0
        self._eof = False

    # -- packet identifiers and the window -------------------------------------------------------

    def next_mid(self) -> int:
        """A packet identifier not in use on this connection (§2.2.1), reserved."""
        used = self._used
        if len(used) >= 65535:
            raise ValueError("every packet identifier is in use")
        mid = self._mid
        while True:
            mid = mid % 65535 + 1
            if mid not in used:
                break
        self._mid = mid
        used.add(mid)
        return mid

    def release_mid(self, mid: int) -> None:
        self._used.discard(mid)

    def send_tracked(self, mid: int, packet: bytes) -> None:
        """A QoS > 0 PUBLISH: written now if the window has room, else queued in order."""
        if len(self.in_flight) < self.window and not self._waiting:
            self.in_flight.add(mid)
            self.out += packet
        else:
            self._waiting.append((mid, packet))

    def acknowledged(self, mid: int) -> bool:
        """The broker acknowledged ``mid``: free it, let a waiting publish in. False if it was
        not ours (the broker confused, or an ack of another connection)."""
        if mid not in self.in_flight:
            return False
        self.in_flight.discard(mid)
        self._used.discard(mid)
        waiting = self._waiting
        while waiting and len(self.in_flight) < self.window:
            next_mid, packet = waiting.popleft()
            self.in_flight.add(next_mid)
            self.out += packet
        return True

    # -- bytes ------------------------------------------------------------------------------------

    def read(self, now: float) -> list[Packet]:
        """Everything the socket has now, as packets; raises ``ConnectionClosed`` at EOF,
        ``OSError``/``ssl.SSLError`` on a broken connection, ``MalformedPacket`` on garbage."""
        if self._eof:
            raise ConnectionClosed("the broker closed the connection")
        packets: list[Packet] = []
        sock = self.sock
        while True:
            try:
                data = sock.recv(_RECV)
            except _NO_DATA:
                break
            if not data:
                if packets:  # what came before the EOF first (a DISCONNECT saying why)
                    self._eof = True
                    break
                raise ConnectionClosed("the broker closed the connection")
            self.last_in = now
            packets += self.reader.feed(data)
            # A short read drained the socket; TLS may still hold decrypted bytes.
            if len(data) < _RECV and not (self._tls and sock.pending()):  # type: ignore[attr-defined]
                break
        return packets

    def flush(self, now: float) -> bool:
        """Write what the socket takes now; True when something is still waiting to go."""
        out = self.out
        while out:
            try:
                sent = self.sock.send(out)
            except _NO_DATA:
                return True
            del out[:sent]
            self.last_out = now
        return False

    def keepalive_due(self, now: float) -> float | None:
        """Send a PINGREQ when due; the next time to look, or None when the broker has not
        answered in time (the connection is dead)."""
        keepalive = self.keepalive
        if keepalive <= 0:
            return now + 60.0
        if self.ping_sent is not None:
            if now - self.ping_sent >= keepalive:
                return None
            return self.ping_sent + keepalive
        quiet_since = min(self.last_in, self.last_out)
        if now - quiet_since >= keepalive:
            self.out += PINGREQ_PACKET
            self.ping_sent = now
            return now + keepalive
        return quiet_since + keepalive

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


__all__ = ["CONNECT_TIMEOUT", "Connection", "ConnectionClosed", "open_socket"]
