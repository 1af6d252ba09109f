"""Secrets in the configuration: where a secret comes from (inline or its file), and which
secret files are more readable than they should be. Values never leave as anything but the
string the caller asked for: no repr, no log.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.config import Settings


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
