"""Every shell command in README.md, run through the installed ``magtek-bridge`` script.

The commands are read from README.md's fenced ``sh`` blocks (tests/integration/support/
readme.py says how), so README and this file cannot drift: a command with no case here fails
``test_readme_command`` loudly, naming the line and what to add.

Conventions, one case per command shape (the longest matching argv prefix wins):
- **one-shot** commands run as written, with a simulated bridge on a real Mosquitto when they
  talk to one; assertions on exit code and output.
- **long-running** commands (``run``, ``monitor``) run as written until they show they work
  (retained ``Status``, decoded output), then get SIGTERM/SIGINT and must exit 0.
- **hardware** commands (real readers: ``run --config /etc/...``, ``devices``) run against a
  temporary copy of the file they name, on this machine's real HID backend with no reader
  attached, and must say so (the "no reader" warning, ``/readyz`` state ``no_readers``).
The environment points every command at the test broker (``MAGTEK_BRIDGE_CONFIG`` = a temporary
config naming it), never at a real one.

To add a README command: add a ``@case("sub", "command")`` function below (``program=`` for
another of the project's scripts), or an entry in ``SHELL_COMMANDS`` for any other command,
saying which test runs it. A leading ``sudo`` is dropped (tests run as root in CI).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.mms import MessageType, commands, parse_message
from bridge.transport.simulated import SimulatedBus
from tests.fakes.mppg_fake import FakeMppg
from tests.integration.harness import REPO, running_bridge, wait_until
from tests.integration.support import Broker, MqttProbe, free_port
from tests.integration.support.readme import ReadmeCommand, shell_commands

pytestmark = pytest.mark.integration

README = REPO / "README.md"
BIN = Path(sys.executable).parent
# The project's installed scripts: README commands starting with one of them are run here.
SCRIPTS = frozenset(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
ROOT = "MagTek/Device/DynaFlexII/B123456"
RUN_TIMEOUT = 60.0  # generous: a one-shot command on a loaded 2-core machine
STOP_TIMEOUT = 30.0


@dataclass
class Ctx:
    """What a case gets: the broker, a scratch dir, the environment and process helpers."""

    broker: Broker
    tmp: Path
    probe_factory: Callable[..., MqttProbe]
    env: dict[str, str] = field(default_factory=dict)

    def run(self, argv: tuple[str, ...] | list[str], timeout: float = RUN_TIMEOUT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=REPO,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout, check=False)

    @contextmanager
    def start(self, argv: tuple[str, ...] | list[str], env: dict[str, str] | None = None
              ) -> Iterator[LongRunning]:
        proc = LongRunning(argv, {**self.env, **(env or {})}, self.tmp)
        try:
            yield proc
        finally:
            proc.kill()


class LongRunning:
    """A long-running command; its stdout and stderr go to files (never a full pipe)."""

    def __init__(self, argv: tuple[str, ...] | list[str], env: dict[str, str], tmp: Path) -> None:
        self.out_path = tmp / f"out-{time.monotonic_ns()}.txt"
        self.err_path = tmp / f"err-{time.monotonic_ns()}.txt"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], cwd=REPO, env=env,
                                         stdout=out, stderr=err)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = RUN_TIMEOUT, *, stream: str = "any"
                    ) -> bool:
        def seen() -> bool:
            where = {"out": self.stdout, "err": self.stderr}.get(stream,
                                                                 self.stdout + self.stderr)
            return text in where
        return wait_until(seen, timeout, interval=0.1)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Signal it and wait; the exit code (a long-running command must exit 0)."""
        self.proc.send_signal(sig)
        return self.proc.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


Case = Callable[[Ctx, ReadmeCommand], None]
CASES: dict[tuple[str, ...], Case] = {}

# Shell commands in README that are not `magtek-bridge ...`: who runs them.
SHELL_COMMANDS: dict[str, str] = {
    "./scripts/test": "CI runs exactly this (.ci/run); running it here would recurse",
    "./scripts/demo": "test_readme_demo_script below runs it as written",
    ".venv/bin/pytest -m kernel": "the same tests (tests/kernel) run in every ./scripts/test",
}


def case(*prefix: str, program: str = "magtek-bridge") -> Callable[[Case], Case]:
    """Register a case for README commands ``program prefix...`` (longest prefix wins)."""
    key = (program, *prefix)

    def register(function: Case) -> Case:
        assert key not in CASES, f"two cases for {key}"
        CASES[key] = function
        return function
    return register


def find_case(command: ReadmeCommand) -> Case | None:
    matches = [key for key in CASES if command.argv[:len(key)] == key]
    return CASES[max(matches, key=len)] if matches else None


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


# -- cases ---------------------------------------------------------------------------------


@case("run", "--simulate")
def run_simulated(ctx: Ctx, command: ReadmeCommand) -> None:
    count = int(command.argv[command.argv.index("--simulate") + 1])
    port = free_port()
    probe = ctx.probe_factory("MagTek/Device/+/+/Status")
    with ctx.start(command.argv, env={"MAGTEK_BRIDGE_METRICS__PORT": str(port)}) as proc:
        statuses: dict[str, bytes] = {}

        def all_connected() -> bool:
            for message in probe.drain():
                statuses[message.topic] = message.payload
            return sum(v == b"connected" for v in statuses.values()) == count
        assert wait_until(all_connected, RUN_TIMEOUT, 0.1), (statuses, proc.stderr)
        assert wait_until(lambda: _get(port, "/readyz")[0] == 200, RUN_TIMEOUT, 0.2)
        _status, body = _get(port, "/readyz")
        assert body["state"] == "ready" and len(body["readers"]) == count
        assert proc.stop() == 0, proc.stderr
    for message in probe.drain():
        statuses[message.topic] = message.payload
    assert set(statuses.values()) == {b"disconnected"}


@case("run", "--config")
def run_with_real_readers(ctx: Ctx, command: ReadmeCommand) -> None:
    # Hardware: the named file is replaced by a copy of config.example.toml; the real HID
    # backend finds no reader on a test machine and the bridge must say so, loudly.
    argv = list(command.argv)
    named = Path(argv[argv.index("--config") + 1])
    copy = ctx.tmp / named.name
    copy.write_text((REPO / "config.example.toml").read_text())
    argv[argv.index("--config") + 1] = str(copy)
    port = free_port()
    env = {"MAGTEK_BRIDGE_METRICS__PORT": str(port), "MAGTEK_BRIDGE_READERS__ABSENT_WARNING": "1",
           "MAGTEK_BRIDGE_LOGGING__FORMAT": "json",
           "MAGTEK_BRIDGE_MQTT__HOST": ctx.broker.host,
           "MAGTEK_BRIDGE_MQTT__PORT": str(ctx.broker.port)}
    with ctx.start(argv, env=env) as proc:
        assert proc.wait_output('"no_reader_attached"', RUN_TIMEOUT), proc.stderr
        # "no_readers" (not "not_ready") also says the broker connection is up.
        assert wait_until(lambda: _get(port, "/readyz")[1].get("state") == "no_readers",
                          RUN_TIMEOUT, 0.2), _get(port, "/readyz")
        assert _get(port, "/readyz")[0] == 503
        assert _get(port, "/healthz")[0] == 200
        assert proc.stop() == 0, proc.stderr
    assert "Traceback" not in proc.stderr


@case("devices")
def devices(ctx: Ctx, command: ReadmeCommand) -> None:
    # Hardware: no reader on a test machine; the command must say so and how to check.
    result = ctx.run(command.argv)
    assert result.returncode == 0, result.stderr
    assert re.search(r"(?i)\bno\b.*\breaders?\b.*found", result.stdout + result.stderr), (
        result.stdout, result.stderr)


@case("decode")
def decode(ctx: Ctx, command: ReadmeCommand) -> None:
    result = ctx.run(command.argv)
    assert result.returncode == 0, result.stderr
    # README's example is PROTOCOL.md's Get Property (device serial number) request.
    assert "Get Property" in result.stdout and "Device Serial Number" in result.stdout


@case("send")
def send(ctx: Ctx, command: ReadmeCommand) -> None:
    bus = SimulatedBus(count=1, auto_present="tap")
    with running_bridge(ctx.broker, bus=bus):
        ctx.probe_factory(f"{ROOT}/Status").expect_retained(f"{ROOT}/Status", b"connected",
                                                            timeout=RUN_TIMEOUT)
        result = ctx.run(command.argv)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stderr == "", result.stderr  # no log lines without -v
    name = command.argv[3]
    if name == "get_serial":
        assert "D101" in result.stdout.upper() and "B123456" in result.stdout.upper()
    if "--follow" in command.argv:
        # The tapped card's notifications arrive after the response: printed, card data masked.
        assert "Transaction Information Update" in result.stdout, result.stdout
        assert "4761730000000119" not in result.stdout


@case("monitor")
def monitor(ctx: Ctx, command: ReadmeCommand) -> None:
    bus = SimulatedBus(count=1, auto_present=None)
    with running_bridge(ctx.broker, bus=bus), ctx.start(command.argv) as proc:
        probe = ctx.probe_factory(f"{ROOT}/Status")
        probe.expect_retained(f"{ROOT}/Status", b"connected", timeout=RUN_TIMEOUT)

        # As written it prints nothing until a message comes: ask the reader until one does.
        def printed_response() -> bool:
            if "D101" not in proc.stdout:
                probe.publish(f"{ROOT}/SendCommand", commands.get_serial_number().hex())
            return "D101" in proc.stdout
        assert wait_until(printed_response, RUN_TIMEOUT, 0.5), (proc.stdout, proc.stderr)
        assert proc.stop(signal.SIGINT) == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line]
    assert lines and all(line.startswith("MagTek/Device/") for line in lines), lines
    assert proc.stderr == ""


@case("config", "check")
def config_check(ctx: Ctx, command: ReadmeCommand) -> None:
    result = ctx.run(command.argv)
    assert result.returncode == 0, result.stderr
    assert "configuration ok" in result.stderr
    assert "mqtt.port = " in result.stdout and "metrics.port = 9108" in result.stdout
    # Then the typo it exists to catch.
    typo = ctx.run(command.argv, env={"MAGTEK_BRIDGE_MQTT_PORT": "1884"})
    assert typo.returncode == 2
    assert "MAGTEK_BRIDGE_MQTT_PORT" in typo.stderr and "MAGTEK_BRIDGE_MQTT__PORT" in typo.stderr


@case("health")
def health(ctx: Ctx, command: ReadmeCommand) -> None:
    port = free_port()
    env = {"MAGTEK_BRIDGE_METRICS__PORT": str(port)}
    with running_bridge(ctx.broker, metrics={"enabled": True, "port": port}) as (app, _bus):
        assert wait_until(lambda: app.readiness()[0], RUN_TIMEOUT, 0.1), app.readiness()
        result = ctx.run(command.argv, env=env)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert json.loads(result.stdout)["status"] == "ok"
    # Nothing listening there any more: unhealthy, and it says which port it asked.
    down = ctx.run(command.argv, env=env)
    assert down.returncode == 1 and f":{port}/" in down.stderr and "metrics.port" in down.stderr


@contextmanager
def _mppg(ctx: Ctx) -> Iterator[FakeMppg]:
    with FakeMppg() as fake:
        config = Path(ctx.env["MAGTEK_BRIDGE_CONFIG"])
        config.write_text(config.read_text() + "\n[mppg]\n"
                          f'base_url = "{fake.base_url}"\nusername = "{fake.username}"\n')
        ctx.env["MAGTEK_BRIDGE_MPPG__PASSWORD"] = fake.password
        yield fake


@case("payreq", "create")
def payreq_create(ctx: Ctx, command: ReadmeCommand) -> None:
    with _mppg(ctx) as fake:
        result = ctx.run(command.argv)
        assert result.returncode == 0, result.stderr
        assert len(fake.requests) == 1
        request = next(iter(fake.requests.values()))
        assert request.id in result.stdout
        for flag, key in (("--amount", "amount"), ("--customer-tran-id", "customerTranID")):
            if flag in command.argv:
                given = command.argv[command.argv.index(flag) + 1]
                assert str(request.definition[key]).rstrip("0") == given.rstrip("0")


@case("payreq", "list")
def payreq_list(ctx: Ctx, command: ReadmeCommand) -> None:
    with _mppg(ctx) as fake:
        paid = fake.seed("3.00", usageCountLimit=1)
        fake.pay(paid)
        fake.seed("4.00")  # active: filtered out by --status paid
        result = ctx.run(command.argv)
    assert result.returncode == 0, result.stderr
    if "--status" in command.argv and command.argv[command.argv.index("--status") + 1] == "paid":
        assert paid in result.stdout and result.stdout.count("\n") >= 1


@case("payreq", "get")
def payreq_get(ctx: Ctx, command: ReadmeCommand) -> None:
    wanted = command.argv[3]
    with _mppg(ctx) as fake:
        seeded = fake.requests.pop(fake.seed("12.50"))
        fake.requests[wanted] = dataclasses.replace(seeded, id=wanted)
        result = ctx.run(command.argv)
    assert result.returncode == 0, result.stderr
    if "--json" in command.argv:
        answer = json.loads(result.stdout)
        assert wanted in json.dumps(answer)
    else:
        assert wanted in result.stdout


@case("payreq", "update")
def payreq_update(ctx: Ctx, command: ReadmeCommand) -> None:
    wanted = command.argv[3]
    with _mppg(ctx) as fake:
        seeded = fake.requests.pop(fake.seed("12.50"))
        fake.requests[wanted] = dataclasses.replace(seeded, id=wanted)
        before = dict(fake.requests[wanted].definition)
        result = ctx.run(command.argv)
        after = fake.requests[wanted].definition
    assert result.returncode == 0, result.stderr
    assert wanted in result.stdout
    if "--disable" in command.argv:
        assert before["isEnabled"] and not after["isEnabled"]
    # Read-modify-write: what the command did not name is kept.
    assert after["amount"] == before["amount"]


@case("clear-root")
def clear_root(ctx: Ctx, command: ReadmeCommand) -> None:
    root = command.argv[-1]
    setup = ctx.probe_factory()
    setup.publish(f"{root}/Status", b"disconnected", retain=True)
    setup.publish(f"{root}/Info", b'{"serial": "B123456"}', retain=True)
    result = ctx.run(command.argv)
    assert result.returncode == 0, (result.stdout, result.stderr)
    # A new subscriber gets no retained Status/Info for that root any more (a marker
    # published after the subscription bounds the wait).
    probe = ctx.probe_factory(f"{root}/#")
    probe.publish(f"{root}/ZZMarker", b"m")
    seen: list[Any] = []
    probe.wait_for(lambda m: seen.append(m) is None and m.topic == f"{root}/ZZMarker",
                   timeout=RUN_TIMEOUT)
    assert [m.topic for m in seen if m.retain and m.payload] == [], seen


@case("present")
def present(ctx: Ctx, command: ReadmeCommand) -> None:
    root, kind = command.argv[2], command.argv[3]
    bus = SimulatedBus(count=1, auto_present=None)  # manual mode: cards only when asked
    with running_bridge(ctx.broker, bus=bus):
        probe = ctx.probe_factory(f"{root}/MMSMessage", f"{root}/Status")
        probe.expect_retained(f"{root}/Status", b"connected", timeout=RUN_TIMEOUT)
        probe.publish(f"{root}/SendCommand", START_BY_KIND[kind].encode())
        probe.wait_for(f"{root}/MMSMessage", timeout=RUN_TIMEOUT)  # the start's response
        result = ctx.run(command.argv)
        assert result.returncode == 0, (result.stdout, result.stderr)
        # The presented card runs the transaction to its ARQC (notification 0x0105).
        probe.wait_for(lambda m: m.topic == f"{root}/MMSMessage" and _is_arqc(m.payload),
                       timeout=RUN_TIMEOUT)


# Seed 004's Start Transaction with one reader type each (contact, MSR, contactless).
START_BY_KIND = {
    "insert": "AA008104010010018430100182013CA30981010082010183010084020003861A9C01009F020600"
              "00000001009F03060000000000005F2A020840",
    "swipe": "AA008104010010018430100182013CA30981010182010083010084020003861A9C01009F02060000"
             "000001009F03060000000000005F2A020840",
    "tap": "AA008104010010018430100182013CA30981010082010083010184020003861A9C01009F02"
           "060000000001009F03060000000000005F2A020840",
}


def _is_arqc(payload: bytes) -> bool:
    message = parse_message(bytes.fromhex(payload.decode()))
    return message.message_type == MessageType.DEVICE_NOTIFICATION and message.command_id == 0x0105


# -- the tests -----------------------------------------------------------------------------

COMMANDS = shell_commands(README)
BRIDGE_COMMANDS = [c for c in COMMANDS if c.runs_script(SCRIPTS)]


@pytest.fixture
def ctx(broker, tmp_path, probe_factory) -> Ctx:
    missing = [name for name in SCRIPTS if not (BIN / name).exists()]
    if missing:
        pytest.fail(f"installed entry points {missing} are missing in {BIN}: "
                    "pip install -e '.[dev]'")
    config = tmp_path / "config.toml"
    config.write_text(f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
                      'reconnect_max_delay = 1.0\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGTEK_BRIDGE_")}
    env.update({"MAGTEK_BRIDGE_CONFIG": str(config), "PYTHONUNBUFFERED": "1"})
    return Ctx(broker, tmp_path, probe_factory, env)


def test_readme_has_the_commands_this_file_expects():
    # The parser itself: if README's blocks were mis-read, everything below would be vacuous.
    texts = [c.text for c in COMMANDS]
    assert "./scripts/test" in texts and "magtek-bridge run --simulate 2" in texts
    assert len(BRIDGE_COMMANDS) >= 10


def test_every_shell_command_is_accounted_for():
    others = [c for c in COMMANDS if not c.runs_script(SCRIPTS)]
    unknown = [str(c) for c in others if c.text not in SHELL_COMMANDS]
    assert not unknown, ("README shell commands no test runs; add them to SHELL_COMMANDS in "
                         f"{Path(__file__).name} with the test that runs them: {unknown}")
    stale = set(SHELL_COMMANDS) - {c.text for c in others}
    assert not stale, f"SHELL_COMMANDS entries no longer in README: {stale}"


def test_every_case_is_used():
    used = {key for c in BRIDGE_COMMANDS for key in CASES if c.argv[:len(key)] == key}
    assert set(CASES) == used, f"cases for commands README no longer has: {set(CASES) - used}"


@pytest.mark.parametrize("command", BRIDGE_COMMANDS, ids=[c.text for c in BRIDGE_COMMANDS])
def test_readme_command(command: ReadmeCommand, ctx: Ctx) -> None:
    runner = find_case(command)
    if runner is None:
        pytest.fail(f"{command}: no case for this command in {Path(__file__).name}; add a "
                    "@case(...) function that runs it and checks its output")
    runner(ctx, command)


def test_readme_demo_script():
    # ./scripts/demo as written: it reuses this .venv (pip sees everything installed) and runs
    # the demo through the installed script.
    result = subprocess.run(["./scripts/demo"], cwd=REPO, capture_output=True, text=True,
                            timeout=600, check=False,
                            env={k: v for k, v in os.environ.items()
                                 if not k.startswith("MAGTEK_BRIDGE_")})
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    assert "done: the whole transaction flowed through MQTT" in result.stdout
    assert "4761730000000119" not in result.stdout + result.stderr


def test_parser_and_unknown_commands(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("text `magtek-bridge inline` is prose\n"
                      "```sh\n$ sudo magtek-bridge send auto get_serial   # comment\n\n"
                      "magtek-bridge frobnicate --now \\\n   --really\n./scripts/other\n```\n"
                      "```toml\nmagtek-bridge = 'not a command'\n```\n")
    parsed = shell_commands(readme)
    assert [(c.line, c.argv) for c in parsed] == [
        (3, ("magtek-bridge", "send", "auto", "get_serial")),
        (5, ("magtek-bridge", "frobnicate", "--now", "--really")),
        (7, ("./scripts/other",)),
    ]
    assert find_case(parsed[0]) is send
    assert find_case(parsed[1]) is None  # test_readme_command fails such a README line
    assert parsed[2].text not in SHELL_COMMANDS
