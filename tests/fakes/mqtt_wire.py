"""Reading raw MQTT packets off a socket in tests: written on its own (not the bridge's
decoder), so a test of the codec or of a client does not agree with itself."""

from __future__ import annotations

import socket


def read_packet(sock: socket.socket) -> bytes:
    """One whole MQTT control packet from a blocking socket, fixed header included."""
    def take(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            assert chunk, "the peer closed the connection"
            data += chunk
        return data

    head = take(2)
    while head[-1] & 0x80:
        head += take(1)
    remaining = shift = 0
    for byte in head[1:]:
        remaining |= (byte & 0x7F) << shift
        shift += 7
    return head + take(remaining)
