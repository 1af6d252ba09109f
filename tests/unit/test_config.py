"""Configuration: file + env + overrides, precedence, errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bridge.config import Settings, load_settings
from bridge.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def test_example_config_parses_to_the_defaults_and_lists_every_key():
    from_file = load_settings(EXAMPLE, environ={})
    defaults = load_settings(None, environ={"MAGTEK_BRIDGE_CONFIG": str(EXAMPLE)})
    assert from_file == defaults
    assert from_file.model_dump(exclude={"topics": {"host_id"}}) == load_settings(
        None, environ={}).model_dump(exclude={"topics": {"host_id"}})
    text = EXAMPLE.read_text()
    for section in Settings.model_fields:
        sub = getattr(from_file, section)
        for key in type(sub).model_fields:
            assert f"{key} =" in text or f"# {key} =" in text or f"[{section}.{key}]" in text, (
                f"{section}.{key} is not documented in config.example.toml")
    tomllib.loads(text)


def test_precedence_overrides_env_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nport = 1111\nhost = "filehost"\n[readers]\nsimulate = 3\n')
    settings = load_settings(path, environ={"MAGTEK_BRIDGE_MQTT__PORT": "2222"},
                             overrides={"readers": {"simulate": 1}})
    assert (settings.mqtt.host, settings.mqtt.port, settings.readers.simulate) == (
        "filehost", 2222, 1)


def test_bad_values_name_the_key_and_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nport = 70000\nqos_messages = 3\n[topics]\nprefix = "a/#/"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    for key in ("mqtt.port", "mqtt.qos_messages", "topics.prefix", str(path)):
        assert key in message


def test_unknown_key_and_bad_toml_are_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[mqtt]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"mqtt\.prot"):
        load_settings(path, environ={})
    path.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, environ={})


def test_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(None, environ={"MAGTEK_BRIDGE_CONFIG": str(tmp_path / "nope.toml")})


def test_secrets_from_file_and_env_never_in_repr(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret-from-file\n")
    settings = load_settings(None, environ={"MAGTEK_BRIDGE_MQTT__PASSWORD_FILE": str(secret)})
    assert settings.mqtt.password_value() == "s3cret-from-file"
    env = load_settings(None, environ={"MAGTEK_BRIDGE_MQTT__PASSWORD": "envpass123"})
    assert env.mqtt.password_value() == "envpass123"
    assert "envpass123" not in repr(env)
    with pytest.raises(ConfigError, match=r"mqtt\.password_file"):
        load_settings(None, environ={"MAGTEK_BRIDGE_MQTT__PASSWORD_FILE": str(tmp_path / "x")})


def test_tls_checks(tmp_path):
    with pytest.raises(ConfigError, match=r"mqtt\.tls\.ca_file"):
        load_settings(None, environ={"MAGTEK_BRIDGE_MQTT__TLS__ENABLED": "true",
                                     "MAGTEK_BRIDGE_MQTT__TLS__CA_FILE": str(tmp_path / "ca")})
    with pytest.raises(ConfigError, match="require_tls"):
        load_settings(None, environ={"MAGTEK_BRIDGE_MQTT__REQUIRE_TLS": "true"})


def test_env_json_values_and_protocol_alias():
    settings = load_settings(None, environ={
        "MAGTEK_BRIDGE_TOPICS__FRIENDLY_NAMES": '{"B123456": "Lane1"}',
        "MAGTEK_BRIDGE_READERS__EXPECTED": '["B123456"]',
        "MAGTEK_BRIDGE_MQTT__PROTOCOL": "311",
    })
    assert settings.topics.friendly_names == {"B123456": "Lane1"}
    assert settings.readers.expected == ["B123456"]
    assert settings.mqtt.protocol == "3.1.1"
