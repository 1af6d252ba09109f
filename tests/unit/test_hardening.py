"""Insecure settings are refused (naming the key) or announced; signals cannot hang a stop."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from bridge.config import insecure_settings, load_settings
from bridge.errors import ConfigError
from bridge.signals import stop_on_signals


def _load(overrides, environ=None):
    return load_settings(None, overrides=overrides, environ=environ or {})


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file", "key_password_file"])
def test_tls_files_with_tls_off_are_an_error_naming_the_key(tmp_path, key):
    path = tmp_path / "f.pem"
    path.write_text("x")
    with pytest.raises(ConfigError, match=rf"mqtt\.tls\.{key}: .*enabled is false"):
        _load({"mqtt": {"tls": {key: str(path)}}})


def test_password_beyond_loopback_without_tls_needs_an_opt_in(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("hunter2hunter2")
    secret.chmod(0o600)
    for mqtt in ({"host": "broker.example", "password_file": str(secret)},
                 {"host": "10.1.2.3", "password": "hunter2hunter2"}):
        with pytest.raises(ConfigError, match=r"mqtt\.password: would be sent in clear"):
            _load({"mqtt": mqtt})
        settings = _load({"mqtt": {**mqtt, "allow_password_without_tls": True}})
        assert [k for k, _ in insecure_settings(settings)] == ["mqtt.allow_password_without_tls"]
    # Loopback, or no password, is fine and quiet.
    for mqtt in ({"host": "127.0.0.1", "password": "x"}, {"host": "localhost", "password": "x"},
                 {"host": "::1", "password": "x"}, {"host": "broker.example"}):
        assert insecure_settings(_load({"mqtt": mqtt})) == []


def test_password_over_tls_is_fine(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = _load({"mqtt": {"host": "broker.example", "password": "pw",
                               "tls": {"enabled": True, "ca_file": str(ca)}}})
    assert insecure_settings(settings) == []


def test_secret_files_every_user_can_read_are_announced(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("hunter2hunter2")
    settings = _load({"mqtt": {"password_file": str(secret)}})
    secret.chmod(0o644)
    [(key, why)] = insecure_settings(settings)
    assert key == "mqtt.password_file" and "0644" in why and str(secret) in why
    assert "hunter2" not in why
    for private in (0o600, 0o640):  # the owner, or the service's group: fine and quiet
        secret.chmod(private)
        assert insecure_settings(settings) == []


def test_unchecked_host_name_is_announced():
    settings = _load({"mqtt": {"tls": {"enabled": True, "check_hostname": False}}})
    assert [k for k, _ in insecure_settings(settings)] == ["mqtt.tls.check_hostname"]


@pytest.mark.parametrize("token", [" ", "short-token", " padded-token-0123456789 "])
def test_weak_websocket_tokens_are_refused(token):
    ws = {"enabled": True, "auth": {"mode": "token", "token": token}}
    with pytest.raises(ConfigError, match=r"websocket\.auth\.token.*16 characters"):
        _load({"websocket": ws})


@pytest.mark.parametrize(("username", "password"), [("pos", " "), (" ", "a-good-password")])
def test_blank_websocket_basic_credentials_are_refused(username, password):
    # As a one-space token is: a blank password is no password.
    ws = {"enabled": True, "auth": {"mode": "basic", "username": username, "password": password}}
    with pytest.raises(ConfigError, match=r"'basic' needs websocket\.auth\.username"):
        _load({"websocket": ws})


def test_websocket_credentials_beyond_loopback_need_wss_or_an_opt_in(tmp_path):
    token = "0123456789abcdef0123"
    ws = {"enabled": True, "address": "192.168.1.20", "auth": {"mode": "token", "token": token}}
    with pytest.raises(ConfigError, match=r"websocket\.tls\.cert_file: .*beyond loopback"):
        _load({"websocket": ws})
    opted = _load({"websocket": {**ws, "auth": {**ws["auth"], "allow_without_tls": True}}})
    assert [k for k, _ in insecure_settings(opted)] == ["websocket.auth.allow_without_tls"]
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    key.chmod(0o600)  # a private key every user may read would be announced too
    wss = _load({"websocket": {**ws, "tls": {"cert_file": str(cert), "key_file": str(key)}}})
    assert insecure_settings(wss) == []
    loopback = _load({"websocket": {**ws, "address": "127.0.0.1"}})
    assert insecure_settings(loopback) == []


def test_signal_handler_only_records_and_a_second_signal_forces_exit():
    stop = threading.Event()
    exits: list[int] = []
    with stop_on_signals(stop, grace=0.2, deadline=60, force_exit=exits.append):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        assert exits == []
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while not exits and time.monotonic() < deadline:
            time.sleep(0.02)
    assert exits == [1]
    assert signal.getsignal(signal.SIGTERM) is not None  # restored


def test_a_stop_that_overruns_its_deadline_is_cut_short():
    stop = threading.Event()
    exits: list[int] = []
    with stop_on_signals(stop, grace=60, deadline=0.2, force_exit=exits.append):
        for _ in range(1):
            os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        deadline = time.monotonic() + 5
        while not exits and time.monotonic() < deadline:
            time.sleep(0.02)
    assert exits == [1]


def test_many_signals_at_once_never_raise_in_the_main_thread():
    stop = threading.Event()
    exits: list[int] = []
    previous = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(stop, grace=60, deadline=60, force_exit=exits.append):
        for _ in range(200):
            os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is previous
    assert exits == []  # the timers are long; nothing forced within the block
