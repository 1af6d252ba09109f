"""What an ``MqttLink`` is given and gives: broker address and TLS material, the messages it
publishes on its own (births, will, finals) and the messages delivered to it."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from bridge.mqtt.packets import Publication


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS material for the broker connection (paths; the key password is read by config)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """Where and how to connect. Built from the ``[mqtt]`` config section."""

    host: str = "127.0.0.1"
    port: int = 1883
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: int = 30
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsOptions | None = None
    reconnect_min_delay: float = 0.5
    reconnect_max_delay: float = 10.0
    # QoS 1 publishes unacknowledged at once on a connection (lower if the broker's Receive
    # Maximum is); above the outbox window, so status and responses never queue.
    max_inflight: int = 20
    # The password goes to a broker beyond loopback without TLS (explicitly allowed by the
    # config): said at every connect, so it is never forgotten.
    password_in_clear: bool = False
    # Connect failures are logged at warning: the first one, then one summary per interval
    # (reconnects come every few seconds; a line each time would bury everything else).
    failure_log_interval: float = 300.0
    # The largest packet we take from the broker (announced in the v5 CONNECT, so the broker
    # drops larger messages for us; on 3.1.1 a larger one ends the connection). Room for the
    # largest MMS message as hex (readers.max_message_size, 1 MiB by default) and its topic.
    max_incoming_packet: int = 4 << 20


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message delivered to us, with the MQTT v5 properties the bridge cares about."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    received_at: float
    response_topic: str | None = None
    correlation_data: bytes | None = None
    expiry_interval: int | None = None
    # The broker sent it before (QoS 1 redelivery after a lost connection or a restart).
    duplicate: bool = False
    # With ``MqttLink(manual_ack=True)``: call once the message is handled (any thread); the
    # broker redelivers it to a persistent session if we vanish first. None: already acked.
    ack: Callable[[], None] | None = field(default=None, compare=False, repr=False)


def failure_reason(exc: BaseException | None) -> str:
    """A socket error as an operator reads it: what happened, not just an errno."""
    if exc is None:
        return "unknown"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listening on that port, or a firewall)"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out (host unreachable or packets dropped)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


__all__ = ["InboundMessage", "LinkOptions", "Publication", "TlsOptions", "failure_reason"]
