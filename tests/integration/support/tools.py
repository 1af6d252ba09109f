"""Finding the external programs the integration tests need.

A missing program is a test failure, never a skip: under ``CI=true`` the message says the
CI image is broken, elsewhere it tells a newcomer how to install it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

import pytest

# Debian installs the broker in /usr/sbin, which is not on a normal user's PATH; Homebrew
# puts it in its own sbin.
_EXTRA_DIRS: Final = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")

_PACKAGE: Final = {
    "mosquitto": "mosquitto",
    "mosquitto_passwd": "mosquitto",
    "mosquitto_pub": "mosquitto-clients",
    "mosquitto_sub": "mosquitto-clients",
    "openssl": "openssl",
}


def find_tool(name: str) -> str | None:
    """The path of program ``name`` on PATH or in an sbin directory, or None."""
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in _EXTRA_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_tool(name: str) -> str:
    """The path of program ``name``; fails the calling test when it is missing.

    Raises:
        pytest.fail.Exception: the program is not installed.
    """
    found = find_tool(name)
    if found is not None:
        return found
    package = _PACKAGE.get(name, name)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: `{name}` is missing, so the integration tests cannot run; "
                    f"scripts/test installs the `{package}` package with apt-get before the "
                    "tests: check that it ran", pytrace=False)
    pytest.fail(f"`{name}` is not installed; the integration tests need a real broker. "
                f"Run ./scripts/test (it installs what is missing), or install it yourself: "
                f"`sudo apt-get install mosquitto mosquitto-clients openssl` (Debian/Ubuntu), "
                f"`brew install mosquitto` (macOS)", pytrace=False)
