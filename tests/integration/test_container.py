"""The Docker image, built from the Dockerfile and run with podman (rootful, no Docker engine).

The base image is made here from Debian packages (``mmdebstrap``: python3, python3-venv,
ca-certificates) and imported into podman's storage once; it is cached under a tag derived
from its package list, so later runs only rebuild the bridge's layers (also cached while the
sources are unchanged). The container runs ``run --simulate 1`` against the test broker
(host network, loopback only): its retained ``Status`` must read ``connected``, its
``HEALTHCHECK`` must pass (on the metrics port set through the environment: the check reads
the same config), and ``podman stop`` must leave ``disconnected``.

Machine facts (measured on the development machine, a container host with hybrid cgroups and
no CAP_SYS_RESOURCE): crun refuses hybrid cgroups ("cgroups in hybrid mode not supported"), so
the runtime is runc; podman's default rlimits cannot be raised there ("setrlimit RLIMIT_NOFILE:
Operation not permitted"), so ulimits are set at or below the current ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import REPO, wait_until
from tests.integration.support import free_port

pytestmark = pytest.mark.integration

BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
SUITE = "bookworm"
BASE_REPO = "localhost/magtek-bridge-test-base"
IMAGE = "localhost/magtek-bridge:test"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# runc: crun refuses hybrid cgroup hosts. Limits no higher than the test process's own.
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
ROOT = "MagTek/Device/DynaFlexII/B123456"


def _podman(*args: str, timeout: float = 900, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout,
                            check=False)
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed ({result.returncode}):\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _base_image(tmp_path: Path) -> str:
    tag = hashlib.sha256(" ".join((SUITE, *BASE_PACKAGES)).encode()).hexdigest()[:12]
    image = f"{BASE_REPO}:{tag}"
    if _podman("image", "exists", image, check=False).returncode == 0:
        return image
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is missing: apt-get install mmdebstrap (./scripts/test does)")
    tarball = tmp_path / "base.tar"
    result = subprocess.run(
        ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
         "--aptopt=Acquire::Retries \"5\"", "--dpkgopt=path-exclude=/usr/share/doc/*",
         "--dpkgopt=path-exclude=/usr/share/man/*", SUITE, str(tarball)],
        capture_output=True, text=True, timeout=1200, check=False)
    if result.returncode != 0:
        pytest.fail(f"mmdebstrap failed:\n{result.stderr[-3000:]}")
    with tarfile.open(tarball) as archive:
        assert "./usr/bin/python3" in archive.getnames()
    _podman("import", str(tarball), image)
    tarball.unlink()
    return image


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: apt-get install podman runc (./scripts/test does)")
    base = _base_image(tmp_path_factory.mktemp("base"))
    build = ["build", "--format", "docker", "--network", "host", *LIMITS, "--pull=never",
             "--build-arg", f"BASE_IMAGE={base}", "-t", IMAGE]
    if HOST_CA.exists():  # pip inside the build trusts what this host trusts (TLS proxies)
        build += ["-v", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg",
                  "PIP_CERT=/run/host-ca.crt"]
    before = _podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    _podman(*build, str(REPO), timeout=1800)
    after = _podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    if before and before != after:  # the previous build of this tag, now untagged
        _podman("rmi", before, check=False)
    return IMAGE


@pytest.fixture
def container(image: str, broker) -> Iterator[tuple[str, int]]:
    port = free_port()
    name = f"magtek-bridge-test-{os.getpid()}-{port}"
    _podman("run", "-d", "--name", name, "--network", "host", *LIMITS,
            "-e", f"MAGTEK_BRIDGE_MQTT__HOST={broker.host}",
            "-e", f"MAGTEK_BRIDGE_MQTT__PORT={broker.port}",
            "-e", f"MAGTEK_BRIDGE_METRICS__PORT={port}",
            "-e", "MAGTEK_BRIDGE_METRICS__ADDRESS=127.0.0.1",
            "-e", "MAGTEK_BRIDGE_TOPICS__HOST_ID=container",
            image, "run", "--simulate", "1")
    try:
        yield name, port
    finally:
        _podman("rm", "-f", "-t", "5", name, check=False, timeout=120)


def test_image_runs_the_bridge_and_passes_its_healthcheck(container, probe_factory):
    name, port = container
    probe = probe_factory(f"{ROOT}/Status")
    try:
        probe.expect_retained(f"{ROOT}/Status", b"connected", timeout=120)
    except AssertionError:
        logs = _podman("logs", name, check=False).stdout + _podman("logs", name,
                                                                   check=False).stderr
        raise AssertionError(f"no 'connected' from the container; its log:\n{logs[-3000:]}"
                             ) from None

    # The image's HEALTHCHECK is `magtek-bridge health`: the port comes from the config.
    config = json.loads(_podman("image", "inspect", IMAGE).stdout)[0]
    health = config.get("Healthcheck") or config.get("Config", {}).get("Healthcheck") or {}
    assert health.get("Test") == ["CMD", "magtek-bridge", "health"], health
    assert wait_until(
        lambda: _podman("healthcheck", "run", name, check=False).returncode == 0, 60, 1.0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
        assert answer.status == 200  # the port set through the environment, seen from outside
    inside = _podman("exec", name, "magtek-bridge", "health")
    assert json.loads(inside.stdout)["status"] == "ok"
    assert "magtek-bridge" in _podman("exec", name, "id", "-un").stdout  # not root

    # The port really is the configured one: another port is reported unhealthy, by name.
    wrong = _podman("exec", "-e", f"MAGTEK_BRIDGE_METRICS__PORT={free_port()}", name,
                    "magtek-bridge", "health", check=False)
    assert wrong.returncode == 1 and "metrics.port" in wrong.stderr

    _podman("stop", "-t", "20", name, timeout=120)
    probe.expect_retained(f"{ROOT}/Status", b"disconnected", timeout=30)
    state = json.loads(_podman("inspect", name).stdout)[0]["State"]
    assert state["ExitCode"] == 0, state
