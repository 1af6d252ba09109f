"""The [websocket] config section: defaults, secrets from files or the environment, and the
combinations refused at load time."""

from __future__ import annotations

import pytest

from bridge.config import load_settings
from bridge.errors import ConfigError


def _load(websocket, environ=None):
    return load_settings(None, overrides={"websocket": websocket}, environ=environ or {})


def test_defaults_off_on_loopback():
    ws = load_settings(None, environ={}).websocket
    assert (ws.enabled, ws.address, ws.port, ws.auth.mode) == (False, "127.0.0.1", 8765, "none")
    assert (ws.max_clients_per_reader, ws.client_queue_limit) == (4, 256)


def test_token_from_file_or_environment(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file-0123456789\n")
    ws = _load({"enabled": True, "auth": {"mode": "token", "token_file": str(token_file)}})
    assert ws.websocket.auth.token_value() == "from-file-0123456789"
    env = {"MAGTEK_BRIDGE_WEBSOCKET__ENABLED": "true",
           "MAGTEK_BRIDGE_WEBSOCKET__AUTH__MODE": "token",
           "MAGTEK_BRIDGE_WEBSOCKET__AUTH__TOKEN": "from-env-0123456789",
           "MAGTEK_BRIDGE_WEBSOCKET__ALLOWED_ORIGINS": '["https://pos.example.com"]'}
    settings = load_settings(None, environ=env)
    assert settings.websocket.auth.token_value() == "from-env-0123456789"
    assert settings.websocket.allowed_origins == ["https://pos.example.com"]
    assert "from-env-0123456789" not in repr(settings)


@pytest.mark.parametrize(
    ("websocket", "key"),
    [
        ({"auth": {"mode": "token"}}, "websocket.auth.mode"),
        ({"auth": {"mode": "basic", "username": "pos"}}, "websocket.auth.mode"),
        ({"auth": {"mode": "token", "token_file": "/nonexistent/t"}}, "websocket.auth.token_file"),
        ({"address": "0.0.0.0"}, "websocket.address"),
        ({"tls": {"cert_file": "/nonexistent/c.pem"}}, "websocket.tls.cert_file"),
        ({"max_clients_per_reader": 0}, "websocket.max_clients_per_reader"),
        ({"client_queue_limit": 0}, "websocket.client_queue_limit"),
    ],
)
def test_refused_combinations_name_the_key(websocket, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _load({"enabled": True, **websocket})


def test_beyond_loopback_with_auth_is_fine(tmp_path):
    password = tmp_path / "pw"
    password.write_text("x")
    ws = _load({"enabled": True, "address": "0.0.0.0",
                "auth": {"mode": "basic", "username": "pos", "password_file": str(password),
                         "allow_without_tls": True}})
    assert ws.websocket.auth.password_value() == "x"


def test_nothing_is_checked_while_disabled():
    assert _load({"auth": {"mode": "token"}, "address": "0.0.0.0"}).websocket.enabled is False
