"""scripts/install.sh, run for real into a scratch directory.

The venv is really created and the package really installed (pip, from this checkout); the
system-changing commands (apt-get, systemctl, udevadm, user and group creation) are replaced
by recorders on PATH, and ``uname -m`` answers the architecture under test, so the script's
decisions can be read back: apt-get update before install, the hidapi build packages only on
armv7l, the service enabled but started only once an existing config passes config check.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import REPO

pytestmark = pytest.mark.integration

RECORDED = ("apt-get", "systemctl", "udevadm", "groupadd", "useradd", "getent")
BUILD_PACKAGES = ("gcc", "libusb-1.0-0-dev", "libudev-dev", "python3-dev")


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    for name in RECORDED:
        _stub(bin_dir / name, f'echo "{name} $*" >> "{calls}"\n')
    _stub(bin_dir / "uname", 'if [ "$1" = "-m" ]; then echo "$FAKE_ARCH"; '
                             'else exec /bin/uname "$@"; fi\n')
    _stub(bin_dir / "id", 'if [ "$1" = "-u" ]; then echo 0; else exit 0; fi\n')
    # The group "magtek" exists only in the recorder: install(1) must not look it up.
    _stub(bin_dir / "install",
          'args=""; skip=0\nfor a in "$@"; do\n'
          '  if [ $skip = 1 ]; then skip=0; continue; fi\n'
          '  case "$a" in -g|-o) skip=1 ;; *) args="$args \'$a\'" ;; esac\n'
          'done\neval exec /usr/bin/install $args\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAGTEK_BRIDGE_", "VIRTUAL"))}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", PREFIX=str(tmp_path / "opt"),
               ETC_DIR=str(tmp_path / "etc"), UNIT_DIR=str(tmp_path / "units"),
               UDEV_DIR=str(tmp_path / "udev"), CALLS=str(calls))
    return env


def _install(env: dict[str, str], arch: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    calls = Path(env["CALLS"])
    calls.write_text("")
    result = subprocess.run(["bash", str(REPO / "scripts/install.sh")], cwd=REPO,
                            env={**env, "FAKE_ARCH": arch}, capture_output=True, text=True,
                            timeout=900, check=False)
    return result, calls.read_text().splitlines()


def test_install_builds_where_needed_and_starts_only_a_checked_config(sandbox):
    result, calls = _install(sandbox, "armv7l")
    assert result.returncode == 0, result.stderr
    apt = [c for c in calls if c.startswith("apt-get")]
    assert apt[0].startswith("apt-get update") and apt[1].startswith("apt-get install")
    for package in ("python3-venv", *BUILD_PACKAGES):
        assert package in apt[1].split(), apt[1]
    assert "systemctl enable magtek-bridge.service" in calls
    assert not [c for c in calls if " start" in c or "restart" in c or "--now" in c], calls
    assert "NOT started" in result.stdout and "config check" in result.stdout
    config = Path(sandbox["ETC_DIR"]) / "config.toml"
    assert config.read_text() == (REPO / "config.example.toml").read_text()
    script = Path(sandbox["PREFIX"]) / "venv/bin/magtek-bridge"
    assert script.exists()
    assert (Path(sandbox["UNIT_DIR"]) / "magtek-bridge.service").exists()
    assert (Path(sandbox["UDEV_DIR"]) / "70-magtek-mms.rules").exists()

    # Again on aarch64 with the config in place and valid: wheels only, and started.
    result, calls = _install(sandbox, "aarch64")
    assert result.returncode == 0, result.stderr
    install_line = next(c for c in calls if c.startswith("apt-get install"))
    assert "python3-venv" in install_line.split()
    assert not set(BUILD_PACKAGES) & set(install_line.split())
    assert "systemctl restart magtek-bridge.service" in calls
    assert "passed config check" in result.stdout

    # A broken config: enabled, not started, the problem shown, exit 2.
    config.write_text('[mqtt]\nport = "eighty"\n')
    result, calls = _install(sandbox, "x86_64")
    assert result.returncode == 2
    assert "mqtt.port" in result.stderr
    assert not [c for c in calls if "restart" in c or " start" in c], calls
    assert "NOT started" in result.stdout
