"""The configuration's sections: one frozen model per TOML table, with its own field checks
(ranges, formats) and the accessors that resolve its secrets. Checks that look at several
keys or sections at once live in ``bridge.config_rules``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bridge.config_secrets import _read_secret, _secret
from bridge.errors import ConfigError
from bridge.mqtt.topics import validate_prefix

_LEVELS: Final = ("debug", "info", "warning", "error", "critical")


def _default_host_id() -> str:
    return re.sub(r"[^0-9A-Za-z-]", "", socket.gethostname()) or "bridge"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Section):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password_file: Path | None = None
    check_hostname: bool = True

    def key_password_value(self) -> str | None:
        return _read_secret(self.key_password_file, "mqtt.tls.key_password_file")


class MqttSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    client_id_prefix: str = Field(default="magtek-bridge", min_length=1, max_length=40)
    keepalive: int = Field(default=30, ge=5, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    # QoS 0 would let a message vanish unacknowledged: the outbox needs an ack to let go.
    qos_messages: int = Field(default=1, ge=1, le=2)
    qos_status: int = Field(default=1, ge=0, le=2)
    reconnect_min_delay: float = Field(default=0.5, gt=0)
    reconnect_max_delay: float = Field(default=10.0, gt=0)
    require_tls: bool = False
    # A password to a broker beyond loopback over plain TCP travels in clear: refused unless
    # this says it is meant (then warned at every connect).
    allow_password_without_tls: bool = False
    tls: TlsSettings = TlsSettings()

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, value: Any) -> Any:
        # TOML/env may give 5 as a number; "311" and "3.1.1" both mean MQTT 3.1.1.
        text = str(value)
        return "3.1.1" if text in ("311", "3.1.1", "4") else text

    def password_value(self) -> str | None:
        return _secret(self.password, self.password_file, "mqtt.password_file")


class TopicsSettings(_Section):
    prefix: str = "MagTek/Device/"
    bridge_prefix: str = "MagTek/Bridge/"
    host_id: str = Field(default_factory=_default_host_id, pattern=r"^[0-9A-Za-z-]{1,64}$")
    friendly_names: dict[str, str] = {}

    @field_validator("prefix", "bridge_prefix")
    @classmethod
    def _clean_prefix(cls, value: str) -> str:
        return validate_prefix(value)


class ReadersSettings(_Section):
    # False: a payments-only bridge (mppg.enabled): no USB scan, and /readyz wants no reader.
    enabled: bool = True
    backend: Literal["hid", "simulated"] = "hid"
    # Which hidapi module: "auto" = hidraw on Linux, native elsewhere (bridge.transport.hid).
    hid_api: Literal["auto", "hidraw", "libusb"] = "auto"
    simulate: int = Field(default=0, ge=0, le=64)
    simulate_stream_rate: float = Field(default=0.0, ge=0, le=1_000_000)
    # Simulated readers: the card they present once a transaction waits (the preference when
    # it allows several kinds), or "manual" (only when asked: <root>/Simulator/Present).
    simulate_card: Literal["tap", "insert", "swipe", "manual"] = "tap"
    simulate_present_delay: float = Field(default=1.0, ge=0, le=600)
    scan_interval: float = Field(default=1.0, gt=0, le=60)
    read_timeout: float = Field(default=0.05, gt=0, le=5)
    max_message_size: int = Field(default=1 << 20, ge=64, le=3_997_756)
    command_timeout: float = Field(default=5.0, gt=0)
    identify_timeout: float = Field(default=2.0, gt=0)
    expected: list[str] = []
    # Hostile or buggy clients: commands a reader takes per second (with a burst), and how
    # often a refusal is reported on <root>/Error once the first few went out in full.
    command_rate: float = Field(default=50.0, gt=0, le=100_000)
    command_burst: int = Field(default=100, ge=1, le=100_000)
    error_interval: float = Field(default=1.0, gt=0, le=3600)
    # No reader open for this long: a warning (then every few minutes); 0 = never.
    absent_warning: float = Field(default=30.0, ge=0)


class OutboxSettings(_Section):
    """Store-and-forward of device messages while the broker is away (bridge.courier)."""

    max_messages: int = Field(default=10_000, ge=1, le=10_000_000)
    max_bytes: int = Field(default=16 << 20, ge=1024)
    ttl: float = Field(default=300.0, gt=0, le=86_400)
    window: int = Field(default=16, ge=1, le=1000)
    max_packet_size: int = Field(default=0, ge=0, le=268_435_460)
    spool: Literal["auto", "on", "off"] = "auto"
    spool_path: Path | None = None
    spool_max_bytes: int = Field(default=64 << 20, ge=1 << 16)

    def spool_file(self, environ: Mapping[str, str]) -> Path | None:
        """Where the durable spool lives, or None when it is off. ``auto`` means on under
        systemd (``$STATE_DIRECTORY``) or when a path is given."""
        if self.spool == "off":
            return None
        if self.spool_path is not None:
            return self.spool_path
        state = environ.get("STATE_DIRECTORY", "").split(":")[0]
        if state:
            return Path(state) / "outbox.sqlite"
        if self.spool == "on":
            raise ConfigError("outbox.spool: 'on' needs outbox.spool_path or $STATE_DIRECTORY")
        return None


class LoggingSettings(_Section):
    level: str = "info"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in _LEVELS:
            raise ValueError(f"must be one of {', '.join(_LEVELS)}")
        return value.lower()


class MetricsSettings(_Section):
    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)
    # Slow or idle clients: connections held at once (the oldest idle one makes room for a
    # new one) and how long one may take to send its request and read the answer.
    max_connections: int = Field(default=64, ge=1, le=10_000)
    request_timeout: float = Field(default=5.0, gt=0, le=300)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


class MppgSettings(_Section):
    """The MPPG Payment Request API (``bridge.mppg``); off unless ``enabled``."""

    enabled: bool = False
    base_url: str | None = None
    username: str | None = None
    username_file: Path | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    processor_name: str | None = Field(default=None, max_length=128)
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    request_timeout: float = Field(default=15.0, gt=0, le=300)
    max_relays: int = Field(default=16, ge=0, le=1000)
    relay_reconnect_min_delay: float = Field(default=1.0, gt=0)
    relay_reconnect_max_delay: float = Field(default=30.0, gt=0)
    queue_size: int = Field(default=32, ge=1, le=10_000)
    # Issue 19: concurrency, limits, durability (README "Payment requests").
    workers: int = Field(default=4, ge=1, le=64)
    operation_timeout: float = Field(default=30.0, gt=0, le=600)
    max_request_bytes: int = Field(default=64 * 1024, ge=1024, le=16 << 20)
    max_json_depth: int = Field(default=32, ge=4, le=512)
    session_expiry: int = Field(default=3600, ge=0, le=7 * 86_400)
    state_dir: Path | None = None

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, value: str | None) -> str | None:
        # Basic auth sends the password with every request: plain HTTP only to this machine.
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://host/PaymentRequest")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("must use https (plain http is allowed for loopback hosts only)")
        return value.rstrip("/")

    def username_value(self) -> str | None:
        if self.username is not None:
            return self.username
        return _read_secret(self.username_file, "mppg.username_file")

    def password_value(self) -> str | None:
        return _secret(self.password, self.password_file, "mppg.password_file")


class WebSocketAuthSettings(_Section):
    """Who may use the WebSocket endpoint: nobody checked, a shared token, or HTTP Basic."""

    mode: Literal["none", "token", "basic"] = "none"
    token: SecretStr | None = None
    token_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    # Credentials beyond loopback travel only over wss:// unless this says plain ws:// is meant.
    allow_without_tls: bool = False

    def token_value(self) -> str | None:
        return _secret(self.token, self.token_file, "websocket.auth.token_file")

    def password_value(self) -> str | None:
        return _secret(self.password, self.password_file, "websocket.auth.password_file")


class WebSocketTlsSettings(_Section):
    cert_file: Path | None = None  # both set: wss:// instead of ws://
    key_file: Path | None = None


class WebSocketSettings(_Section):
    """The local WebSocket endpoint for WebSocket MMS clients (bridge.websocket)."""

    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    allowed_origins: list[str] = []
    max_clients_per_reader: int = Field(default=4, ge=1, le=64)
    client_queue_limit: int = Field(default=256, ge=1, le=100_000)
    tls: WebSocketTlsSettings = WebSocketTlsSettings()
    auth: WebSocketAuthSettings = WebSocketAuthSettings()
