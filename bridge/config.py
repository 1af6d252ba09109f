"""Configuration: one validated model from a TOML file, the environment and CLI overrides.

The only importer of ``pydantic_settings``. Precedence: CLI overrides > environment
(``MAGTEK_BRIDGE_<SECTION>__<KEY>``) > TOML file > defaults. Secrets come from files or the
environment, never the command line, and never appear in a repr. Every error names the key
(dotted, ``mqtt.port``) or the file, and the reason; the CLI turns it into exit code 2.

This module loads (TOML + environment) and is the public face: the section models live in
``bridge.config_sections``, the checks across sections in ``bridge.config_rules``, secret
reading in ``bridge.config_secrets``; import them all from here.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from bridge.config_rules import (
    MIN_TOKEN_LENGTH,
    _check_files,
    insecure_settings,
    plaintext_password,
)
from bridge.config_sections import (
    LoggingSettings,
    MetricsSettings,
    MppgSettings,
    MqttSettings,
    OutboxSettings,
    ReadersSettings,
    TlsSettings,
    TopicsSettings,
    WebSocketAuthSettings,
    WebSocketSettings,
    WebSocketTlsSettings,
)
from bridge.errors import ConfigError

DEFAULT_CONFIG_PATH: Final = Path("/etc/magtek-bridge/config.toml")
ENV_PREFIX: Final = "MAGTEK_BRIDGE_"
CONFIG_ENV: Final = "MAGTEK_BRIDGE_CONFIG"


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


__all__ = [
    "DEFAULT_CONFIG_PATH",
    "MIN_TOKEN_LENGTH",
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

