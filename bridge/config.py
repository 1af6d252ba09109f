"""Configuration: one validated model from a TOML file, the environment and CLI overrides.

The only importer of ``pydantic_settings``. Precedence: CLI overrides > environment
(``MAGTEK_BRIDGE_<SECTION>__<KEY>``) > TOML file > defaults. Secrets come from files or the
environment, never the command line, and never appear in a repr. Every error names the key
(dotted, ``mqtt.port``) or the file, and the reason; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from bridge.errors import ConfigError
from bridge.mqtt.topics import validate_prefix

DEFAULT_CONFIG_PATH: Final = Path("/etc/magtek-bridge/config.toml")
ENV_PREFIX: Final = "MAGTEK_BRIDGE_"
CONFIG_ENV: Final = "MAGTEK_BRIDGE_CONFIG"
_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
MIN_TOKEN_LENGTH: Final = 16


def _default_host_id() -> str:
    return re.sub(r"[^0-9A-Za-z-]", "", socket.gethostname()) or "bridge"


def _secret(value: SecretStr | None, path: Path | None, key: str) -> str | None:
    """A secret given inline (environment) or, failing that, read from its file."""
    if value is not None:
        return value.get_secret_value()
    return _read_secret(path, key)


def _read_secret(path: Path | None, key: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc


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


class Settings(BaseSettings):
    """Everything the bridge reads from its configuration; sections mirror the TOML file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True,
    )

    mqtt: MqttSettings = MqttSettings()
    topics: TopicsSettings = TopicsSettings()
    readers: ReadersSettings = ReadersSettings()
    outbox: OutboxSettings = OutboxSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    mppg: MppgSettings = MppgSettings()


    websocket: WebSocketSettings = WebSocketSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_data, environ = _SOURCES.get()
        return (
            init_settings,
            _MappingEnvSource(settings_cls, environ),
            InitSettingsSource(settings_cls, toml_data),
        )


class _MappingEnvSource(EnvSettingsSource):
    """The standard env source, reading an injected mapping (tests) or ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = {k: v for k, v in environ.items() if k.upper() != CONFIG_ENV}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._environ.items()}



_SOURCES: ContextVar[tuple[dict[str, Any], Mapping[str, str]]] = ContextVar("_SOURCES")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc


def config_file_path(config_path: str | os.PathLike[str] | None,
                     environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The file to read, and whether it was named (``--config`` or ``$MAGTEK_BRIDGE_CONFIG``:
    then it must exist) rather than the default (which may be missing)."""
    explicit = config_path if config_path is not None else environ.get(CONFIG_ENV)
    return (Path(explicit), True) if explicit else (DEFAULT_CONFIG_PATH, False)


def read_config_file(config_path: str | os.PathLike[str] | None,
                     environ: Mapping[str, str]) -> tuple[Path, dict[str, Any]]:
    """The config file's path and its TOML tables ({} for a missing default file)."""
    path, explicit = config_file_path(config_path, environ)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory, not a file: give the TOML file "
                          f"itself, e.g. {path / 'config.toml'}")
    if path.is_file():
        return path, _read_toml(path)
    if explicit:
        named = "$" + CONFIG_ENV if config_path is None else "--config"
        raise ConfigError(f"config file {path} does not exist (named by {named})")
    return path, {}


def env_var_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable for a config key: ("mqtt", "port") -> MAGTEK_BRIDGE_MQTT__PORT."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _describe_error(err: Any, env: Mapping[str, str]) -> str:
    """``mqtt.port: <reason>``, naming the environment variable when the value came from one."""
    loc = tuple(err["loc"])
    text = f"{'.'.join(str(p) for p in loc)}: {err['msg']}"
    upper = {k.upper(): k for k in env}
    for depth in range(len(loc), 0, -1):  # the key itself, or a table given as JSON
        name = upper.get(env_var_name(loc[:depth]))
        if name is not None:
            return f"{text} (from environment variable {name}={_shown(name, env[name])})"
    return text


def _shown(name: str, value: str) -> str:
    return "<redacted>" if re.search(r"PASSWORD|TOKEN|SECRET", name, re.I) else repr(value)


def _describe_settings_error(exc: SettingsError, env: Mapping[str, str]) -> str:
    """pydantic-settings names only the field when a table/list variable is not JSON."""
    match = re.search(r'field "(\w+)"', str(exc))
    section = env_var_name((match.group(1),)) + "__" if match else ENV_PREFIX
    names = sorted(k for k, v in env.items()
                   if k.upper().startswith(section) and v.lstrip()[:1] in "[{")
    culprits = ", ".join(f"{k}={_shown(k, env[k])}" for k in names) or "see " + section + "*"
    return (f"invalid environment: {culprits}: a list or table value must be valid JSON, "
            'e.g. \'["B123456"]\'')


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load and validate the configuration.

    Args:
        config_path: a file that must exist; ``None`` means ``$MAGTEK_BRIDGE_CONFIG`` (must
            exist too) or the default path (may be missing: defaults + environment).
        overrides: nested dict from the command line, highest precedence.
        environ: the environment to read (defaults to ``os.environ``).

    Raises:
        ConfigError: naming the file and every bad key with its reason.
    """
    env = dict(os.environ if environ is None else environ)
    path, toml_data = read_config_file(config_path, env)
    token = _SOURCES.set((toml_data, env))
    try:
        settings = Settings(**dict(overrides or {}))
    except ValidationError as exc:
        problems = "; ".join(_describe_error(err, env) for err in exc.errors())
        where = f" (file {path})" if toml_data else ""
        raise ConfigError(f"invalid configuration{where}: {problems}") from None
    except SettingsError as exc:  # e.g. a list or table variable that is not valid JSON
        raise ConfigError(_describe_settings_error(exc, env)) from None
    finally:
        _SOURCES.reset(token)
    _check_files(settings, env)
    return settings


def _check_files(settings: Settings, env: Mapping[str, str]) -> None:
    tls = settings.mqtt.tls
    if settings.mqtt.require_tls and not tls.enabled:
        raise ConfigError("mqtt.require_tls: TLS is required but mqtt.tls.enabled is false")
    _check_mqtt_exposure(settings.mqtt)
    if tls.enabled:
        for key in ("ca_file", "cert_file", "key_file", "key_password_file"):
            value = getattr(tls, key)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"mqtt.tls.{key}: file {value} does not exist")
        if (tls.cert_file is None) != (tls.key_file is None):
            raise ConfigError("mqtt.tls.cert_file and mqtt.tls.key_file go together")
    if settings.mqtt.password_file is not None:
        _read_secret(settings.mqtt.password_file, "mqtt.password_file")
    settings.outbox.spool_file(env)  # "on" without a place for it
    spool_path = settings.outbox.spool_path
    if spool_path is not None and not spool_path.parent.is_dir():
        raise ConfigError(f"outbox.spool_path: directory {spool_path.parent} does not exist")
    if settings.mqtt.reconnect_max_delay < settings.mqtt.reconnect_min_delay:
        raise ConfigError("mqtt.reconnect_max_delay: must not be below reconnect_min_delay")
    _check_mppg(settings.mppg)
    _check_readers_off(settings)
    if settings.websocket.enabled:
        _check_websocket(settings.websocket)


def _check_mqtt_exposure(mqtt: MqttSettings) -> None:
    """Settings that would quietly send secrets in clear are errors, not surprises."""
    tls = mqtt.tls
    if not tls.enabled:
        for key in ("ca_file", "cert_file", "key_file", "key_password_file"):
            if getattr(tls, key) is not None:
                raise ConfigError(
                    f"mqtt.tls.{key}: set while mqtt.tls.enabled is false, so the connection "
                    "would be plain TCP; set mqtt.tls.enabled = true (or remove the key)")
    has_password = mqtt.password is not None or mqtt.password_file is not None
    if (has_password and not tls.enabled and not _is_loopback(mqtt.host)
            and not mqtt.allow_password_without_tls):
        raise ConfigError(
            f"mqtt.password: would be sent in clear to {mqtt.host} (plain TCP beyond loopback); "
            "enable mqtt.tls, or set mqtt.allow_password_without_tls = true if that is meant")


def plaintext_password(mqtt: MqttSettings) -> bool:
    """Does the broker connection send a password in clear beyond this machine?"""
    has_password = mqtt.password is not None or mqtt.password_file is not None
    return has_password and not mqtt.tls.enabled and not _is_loopback(mqtt.host)


def insecure_settings(settings: Settings) -> list[tuple[str, str]]:
    """(setting, why) for every weakened protection the configuration asks for: logged as a
    warning at start so nobody runs one by accident."""
    found: list[tuple[str, str]] = []
    if settings.mqtt.tls.enabled and not settings.mqtt.tls.check_hostname:
        found.append(("mqtt.tls.check_hostname",
                      "the broker certificate is not checked against its host name: anyone "
                      "with a certificate from the same CA can pose as the broker"))
    if plaintext_password(settings.mqtt):
        found.append(("mqtt.allow_password_without_tls",
                      f"the MQTT password goes in clear to {settings.mqtt.host}"))
    ws = settings.websocket
    if (ws.enabled and ws.auth.mode != "none" and ws.tls.cert_file is None
            and not _is_loopback(ws.address)):
        found.append(("websocket.auth.allow_without_tls",
                      f"WebSocket credentials travel in clear (ws:// on {ws.address})"))
    found.extend(_exposed_secret_files(settings))
    return found


def _exposed_secret_files(settings: Settings) -> list[tuple[str, str]]:
    """Secret files every local user may read (a 0644 password file, say): the bridge still
    starts, but says so; group access (e.g. 0640 root:magtek) is how a unit shares them."""
    ws = settings.websocket
    files = {
        "mqtt.password_file": settings.mqtt.password_file,
        "mqtt.tls.key_file": settings.mqtt.tls.key_file,
        "mqtt.tls.key_password_file": settings.mqtt.tls.key_password_file,
        "mppg.password_file": settings.mppg.password_file,
        "websocket.auth.token_file": ws.auth.token_file,
        "websocket.auth.password_file": ws.auth.password_file,
        "websocket.tls.key_file": ws.tls.key_file,
    }
    found: list[tuple[str, str]] = []
    for key, path in files.items():
        if path is None:
            continue
        try:
            mode = path.stat().st_mode
        except OSError:
            continue  # a missing file is reported where it is read
        if mode & 0o004:
            found.append((key, f"{path} is readable by every user on this host "
                               f"(mode {mode & 0o777:04o}); chmod o-rwx it"))
    return found


def _check_mppg(mppg: MppgSettings) -> None:
    if mppg.relay_reconnect_max_delay < mppg.relay_reconnect_min_delay:
        raise ConfigError(
            "mppg.relay_reconnect_max_delay: must not be below relay_reconnect_min_delay")
    if not mppg.enabled:
        return  # the payreq CLI checks what it needs when it runs
    if mppg.base_url is None:
        raise ConfigError("mppg.base_url: required when mppg.enabled is true")
    if mppg.username_value() is None or mppg.password_value() is None:
        raise ConfigError("mppg.username and mppg.password (or their _file keys): "
                          "required when mppg.enabled is true")


def _check_readers_off(settings: Settings) -> None:
    """``readers.enabled = false`` is for a payments-only bridge; nothing else makes sense."""
    if settings.readers.enabled:
        return
    if not settings.mppg.enabled:
        raise ConfigError("readers.enabled: false leaves the bridge nothing to do; it is for a "
                          "payments-only bridge (set mppg.enabled = true, or readers.enabled = "
                          "true)")
    if settings.readers.expected:
        raise ConfigError("readers.expected: lists readers while readers.enabled is false")
    if settings.websocket.enabled:
        raise ConfigError("websocket.enabled: the WebSocket endpoint serves readers, and "
                          "readers.enabled is false")


def _check_websocket(ws: WebSocketSettings) -> None:
    for key in ("cert_file", "key_file"):
        value = getattr(ws.tls, key)
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"websocket.tls.{key}: file {value} does not exist")
    if (ws.tls.cert_file is None) != (ws.tls.key_file is None):
        raise ConfigError("websocket.tls.cert_file and websocket.tls.key_file go together")
    auth = ws.auth
    if auth.mode == "token" and not auth.token_value():
        raise ConfigError("websocket.auth.mode: 'token' needs websocket.auth.token_file or "
                          "MAGTEK_BRIDGE_WEBSOCKET__AUTH__TOKEN")
    if auth.mode == "token":
        token = auth.token_value() or ""
        if len(token.strip()) < MIN_TOKEN_LENGTH or token != token.strip():
            raise ConfigError(f"websocket.auth.token (or token_file): at least "
                              f"{MIN_TOKEN_LENGTH} characters, no leading or trailing spaces "
                              "(e.g. openssl rand -hex 16)")
    if (auth.mode != "none" and ws.tls.cert_file is None and not _is_loopback(ws.address)
            and not auth.allow_without_tls):
        raise ConfigError(
            f"websocket.tls.cert_file: credentials ({auth.mode}) on {ws.address} beyond loopback "
            "need wss:// (websocket.tls.cert_file and key_file), or "
            "websocket.auth.allow_without_tls = true if plain ws:// is meant")
    if auth.mode == "basic" and not ((auth.username or "").strip()
                                     and (auth.password_value() or "").strip()):
        raise ConfigError("websocket.auth.mode: 'basic' needs websocket.auth.username and "
                          "websocket.auth.password_file (or "
                          "MAGTEK_BRIDGE_WEBSOCKET__AUTH__PASSWORD)")
    # A reader that takes payments must not be drivable by anyone on the network.
    if auth.mode == "none" and not _is_loopback(ws.address):
        raise ConfigError(f"websocket.address: listening on {ws.address} (beyond loopback) "
                          "needs websocket.auth.mode 'token' or 'basic'")


__all__ = [
    "DEFAULT_CONFIG_PATH",
    "LoggingSettings",
    "MetricsSettings",
    "MppgSettings",
    "MqttSettings",
    "OutboxSettings",
    "ReadersSettings",
    "Settings",
    "TlsSettings",
    "TopicsSettings",
    "WebSocketAuthSettings",
    "WebSocketSettings",
    "WebSocketTlsSettings",
    "config_file_path",
    "env_var_name",
    "insecure_settings",
    "load_settings",
    "plaintext_password",
    "read_config_file",
]
