"""The [mppg] configuration section."""

from __future__ import annotations

import pytest

from bridge.config import load_settings
from bridge.errors import ConfigError


def test_off_by_default():
    mppg = load_settings(None, environ={}).mppg
    assert mppg.enabled is False and mppg.base_url is None and mppg.max_relays == 16


def test_credentials_from_environment_stay_out_of_repr():
    settings = load_settings(None, environ={
        "MAGTEK_BRIDGE_MPPG__ENABLED": "true",
        "MAGTEK_BRIDGE_MPPG__BASE_URL": "https://mppg.example/PaymentRequest/",
        "MAGTEK_BRIDGE_MPPG__USERNAME": "merchant",
        "MAGTEK_BRIDGE_MPPG__PASSWORD": "hunter2-secret",
    })
    assert settings.mppg.base_url == "https://mppg.example/PaymentRequest"
    assert settings.mppg.username_value() == "merchant"
    assert settings.mppg.password_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(settings)


def test_credentials_from_files(tmp_path):
    (tmp_path / "u").write_text("merchant\n")
    (tmp_path / "p").write_text("pw\n")
    settings = load_settings(None, environ={}, overrides={"mppg": {
        "enabled": True, "base_url": "http://127.0.0.1:9/PaymentRequest",
        "username_file": str(tmp_path / "u"), "password_file": str(tmp_path / "p")}})
    assert (settings.mppg.username_value(), settings.mppg.password_value()) == ("merchant",
                                                                                "pw")


@pytest.mark.parametrize(("section", "names"), [
    ({"enabled": True}, "mppg.base_url"),
    ({"enabled": True, "base_url": "https://m.example"}, "mppg.username"),
    ({"enabled": True, "base_url": "https://m.example", "username": "u",
      "password_file": "/nonexistent/pw"}, "mppg.password_file"),
    ({"base_url": "ftp://m.example"}, "mppg.base_url"),
    ({"base_url": "http://m.example"}, "https"),
    ({"max_relays": -1}, "mppg.max_relays"),
    ({"relay_reconnect_min_delay": 5, "relay_reconnect_max_delay": 1},
     "mppg.relay_reconnect_max_delay"),
])
def test_bad_sections_name_the_key(section, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_settings(None, environ={}, overrides={"mppg": section})


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/x", "http://localhost/x",
                                 "http://[::1]:80/x"])
def test_plain_http_only_to_loopback(url):
    assert load_settings(None, environ={}, overrides={"mppg": {"base_url": url}}).mppg.base_url
