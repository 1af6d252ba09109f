"""One exception tree for the whole bridge.

Who misbehaved picks the channel: a reader that sends garbage is a ``DeviceProtocolError``
(log + metric, keep running); a bad ``SendCommand`` is a ``CommandError`` (error reply on
MQTT + metric); our own configuration is a ``ConfigError`` (exit 2).
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration file or environment is invalid."""


class TransportError(BridgeError):
    """A reader could not be reached through its transport."""


class DeviceNotFoundError(TransportError):
    """No reader at the requested path."""


class DeviceGoneError(TransportError):
    """The reader disappeared (unplugged) while open."""


class DevicePermissionError(TransportError):
    """The reader exists but we may not open it (udev rule / group missing)."""


class TransportTimeoutError(TransportError, TimeoutError):
    """A transport operation did not finish in time."""


class ProtocolError(BridgeError):
    """Bytes that do not follow the MMS protocol."""

    def __init__(
        self, message: str, *, reason: str = "malformed", offset: int | None = None
    ) -> None:
        super().__init__(message if offset is None else f"{message} (at offset {offset})")
        self.detail = message  # without the offset, for wrapping in another ProtocolError
        self.reason = reason
        self.offset = offset


class DeviceProtocolError(ProtocolError):
    """The reader sent something malformed."""


class CommandError(ProtocolError):
    """A command from MQTT (or another client) was rejected before reaching the reader."""


__all__ = [
    "BridgeError",
    "CommandError",
    "ConfigError",
    "DeviceGoneError",
    "DeviceNotFoundError",
    "DevicePermissionError",
    "DeviceProtocolError",
    "ProtocolError",
    "TransportError",
    "TransportTimeoutError",
]
