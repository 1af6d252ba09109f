"""Checks across keys and sections, run once the model is built: settings that contradict
each other, name files that do not exist, or would send secrets in clear are errors; the
weakened protections that stay allowed are listed by ``insecure_settings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bridge.config_secrets import _exposed_secret_files, _read_secret
from bridge.config_sections import MppgSettings, MqttSettings, WebSocketSettings, _is_loopback
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.config import Settings

MIN_TOKEN_LENGTH: Final = 16


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
