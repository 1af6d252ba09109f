"""How a reader session behaves (``SessionOptions``), and who else follows readers
(``ReaderObserver``). Re-exported by ``bridge.session``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bridge.session import ReaderSession


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Per-reader behaviour, built from the ``[topics]`` and ``[readers]`` config sections."""

    prefix: str = "MagTek/Device/"
    friendly_names: Mapping[str, str] = field(default_factory=dict)
    client_id_prefix: str = "magtek-bridge"
    host_id: str = "bridge"
    qos_status: int = 1
    read_timeout: float = 0.05
    max_message_size: int = 1 << 20
    command_timeout: float = 5.0
    identify_timeout: float = 2.0
    identify_attempts: int = 3
    command_queue_size: int = 32
    # Commands a reader takes from all its clients together (token bucket), and how its
    # refusals are reported: ``error_burst`` in full, then one summary per ``error_interval``.
    command_rate: float = 50.0
    command_burst: int = 100
    error_interval: float = 1.0
    error_burst: int = 5
    log_messages: bool = False


class ReaderObserver(Protocol):
    """Something beside MQTT that follows readers (the WebSocket endpoint, for one).

    Called on the session's own threads: implementations must return quickly and never block
    (queue the work). ``reader_message`` gets every device message, in order, as the uppercase
    hex payload published on ``MMSMessage``.
    """

    def reader_connected(self, session: ReaderSession) -> None: ...

    def reader_message(self, session: ReaderSession, payload: bytes) -> None: ...

    def reader_disconnected(self, session: ReaderSession) -> None: ...


__all__ = ["ReaderObserver", "SessionOptions"]
