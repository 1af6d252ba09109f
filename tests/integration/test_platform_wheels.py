"""Raspberry Pi installs: what pip will fetch for 64-bit and 32-bit Raspberry Pi OS.

pip resolves the project's dependencies (read from pyproject.toml, so this cannot drift) for
another platform with ``--dry-run --only-binary=:all: --platform ...``, against PyPI itself
(this needs the network, as ``scripts/install.sh`` does on a Pi; local pip configuration and
mirrors are ignored with ``--isolated``):
- aarch64 (64-bit Raspberry Pi OS / Debian 12: Python 3.11, glibc 2.36; Ubuntu 24.04: Python
  3.12, glibc 2.39): every dependency, hidapi included, comes as a wheel: nothing is compiled.
- armv7l (32-bit Raspberry Pi OS, Python 3.11, glibc 2.36): everything but hidapi comes as a
  wheel; hidapi has no armv7l wheel on PyPI, only an sdist, which pip builds there: that is
  why install.sh installs a compiler, libusb-1.0-0-dev, libudev-dev and python3-dev on armv7l.
  (That package list was enough to build hidapi's sdist, both its hid and hidraw modules, in a
  clean Debian 12 container; see the README.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest

from tests.integration.harness import REPO

pytestmark = pytest.mark.integration

INDEX = "https://pypi.org/simple"
BOOKWORM_GLIBC = 36  # Debian 12 and Raspberry Pi OS bookworm: glibc 2.36


def platforms(arch: str, glibc_minor: int) -> list[str]:
    """The wheel platform tags pip accepts on a glibc 2.<minor> system of ``arch`` (pip's
    --platform takes them literally: the older manylinux levels must be listed too)."""
    return [*(f"manylinux_2_{v}_{arch}" for v in range(17, glibc_minor + 1)),
            f"manylinux2014_{arch}", f"linux_{arch}"]
BUILT_ON_ARMV7L = {"hidapi"}


def _dependencies() -> list[str]:
    return list(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match.group(0).lower().replace("_", "-")


def _resolve(requirements: list[str], platforms: list[str], python: str, tmp: Path
             ) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """pip's dry-run resolution for the platform: (result, {name: wheel file name})."""
    report = tmp / "report.json"
    report.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    args = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--quiet",
            "--disable-pip-version-check", "--ignore-installed", "--only-binary=:all:",
            "--python-version", python, "--implementation", "cp",
            "--abi", "cp" + python.replace(".", ""), "--index-url", INDEX,
            "--retries", "5", "--timeout", "60", "--target", str(tmp / "target"),
            "--report", str(report)]
    for platform in platforms:
        args += ["--platform", platform]
    result = subprocess.run([*args, *requirements], capture_output=True, text=True,
                            timeout=900, env=env, check=False)
    files: dict[str, str] = {}
    if result.returncode == 0:
        for item in json.loads(report.read_text())["install"]:
            name = item["metadata"]["name"].lower().replace("_", "-")
            files[name] = item["download_info"]["url"].rsplit("/", 1)[-1]
    return result, files


def _network_problem(result: subprocess.CompletedProcess[str]) -> bool:
    return bool(re.search(r"NewConnectionError|Temporary failure in name resolution|"
                          r"Max retries exceeded|timed out", result.stderr))


@pytest.mark.parametrize(("python", "glibc"), [("3.11", BOOKWORM_GLIBC), ("3.12", 39)])
def test_aarch64_gets_every_dependency_as_a_wheel(python, glibc, tmp_path):
    result, files = _resolve(_dependencies(), platforms("aarch64", glibc), python, tmp_path)
    assert not _network_problem(result), f"PyPI unreachable (needs the network):\n{result.stderr}"
    assert result.returncode == 0, result.stderr
    wanted = {_name(r) for r in _dependencies()}
    assert wanted <= set(files), (wanted - set(files), files)
    assert all(f.endswith(".whl") for f in files.values()), files
    assert "aarch64" in files["hidapi"], files["hidapi"]


def test_armv7l_builds_only_hidapi(tmp_path):
    armv7l = platforms("armv7l", BOOKWORM_GLIBC)
    others = [r for r in _dependencies() if _name(r) not in BUILT_ON_ARMV7L]
    result, files = _resolve(others, armv7l, "3.11", tmp_path)
    assert not _network_problem(result), f"PyPI unreachable (needs the network):\n{result.stderr}"
    assert result.returncode == 0, result.stderr
    assert {_name(r) for r in others} <= set(files)
    assert all(f.endswith(".whl") for f in files.values()), files

    for requirement in (r for r in _dependencies() if _name(r) in BUILT_ON_ARMV7L):
        result, _ = _resolve([requirement], armv7l, "3.11", tmp_path)
        assert not _network_problem(result), result.stderr
        assert result.returncode != 0 and "No matching distribution" in result.stderr, (
            f"{requirement} now resolves to an armv7l wheel: install.sh's build packages "
            "may no longer be needed")
        # ... and what pip builds instead is there: the release it picks has an sdist.
        name = _name(requirement)
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=60) as answer:
            release = json.load(answer)
        kinds = {u["packagetype"] for u in release["urls"]}
        assert "sdist" in kinds, kinds
        assert not any("armv7l" in u["filename"] for u in release["urls"])
