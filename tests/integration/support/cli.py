"""Talking to a test broker "from outside" with mosquitto_pub and mosquitto_sub.

Both run with bounded timeouts. ``CliSubscriber`` runs mosquitto_sub in the background with
``-d``, so the test can wait for its SUBACK before publishing instead of guessing, and
prints each message as ``MSG <retain> <hex payload> <topic>`` so any payload parses.
"""

from __future__ import annotations

import itertools
import os
import queue
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from tests.integration.support.broker import Broker
from tests.integration.support.tools import require_tool

CLI_TIMEOUT_S: Final = 10.0
SUBSCRIBED_TIMEOUT_S: Final = 5.0
# mosquitto_sub's own limit (-W, whole seconds): it exits by itself even if never closed.
SUB_LIFETIME_S: Final = 30
CLOSE_TIMEOUT_S: Final = 5.0
_MARK: Final = "MSG"
# mosquitto_sub -F: '%' and '@' start fields, so the marker avoids both.
_FORMAT: Final = f"{_MARK} %r %x %t"
_SUBSCRIBED: Final = "Subscribed (mid:"

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class CliResult:
    """How a command-line client ended."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class CliMessage:
    """A message as mosquitto_sub printed it."""

    topic: str
    payload: bytes
    retain: bool


def run_cli(args: Sequence[str], *, stdin: bytes | None = None,
            timeout: float = CLI_TIMEOUT_S, check: bool = True) -> CliResult:
    """Run a command and wait for it, at most ``timeout`` seconds.

    Raises:
        AssertionError: it timed out, or failed (non-zero) while ``check``.
    """
    try:
        done = subprocess.run(list(args), input=stdin, capture_output=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{args[0]} did not finish within {timeout} s") from exc
    result = CliResult(tuple(args), done.returncode, done.stdout.decode(errors="replace"),
                       done.stderr.decode(errors="replace"))
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


def connection_args(broker: Broker, *, tool: str, username: str | None = None,
                    password: str | None = None, ca_file: Path | None = None,
                    client_cert: bool | None = None) -> list[str]:
    """mosquitto_pub/sub options to reach ``broker``: host, port, MQTT v5, a unique id,
    and by default the broker's credentials, CA and (if it requires one) client cert."""
    args = ["-h", broker.host, "-p", str(broker.port), "-V", "mqttv5",
            "-i", f"cli-{tool}-{os.getpid()}-{next(_ids)}"]
    user = username if username is not None else broker.username
    secret = password if username is not None else broker.password
    if user is not None:
        args += ["-u", user]
        if secret is not None:
            args += ["-P", secret]
    if broker.tls or ca_file is not None:
        args += ["--cafile", str(ca_file or broker.ca_file)]
    with_cert = broker.require_certificate if client_cert is None else client_cert
    if with_cert and broker.client_cert is not None and broker.client_key is not None:
        args += ["--cert", str(broker.client_cert), "--key", str(broker.client_key)]
    return args


def mosquitto_pub(broker: Broker, topic: str, payload: bytes, *, qos: int = 1,
                  retain: bool = False, extra: Sequence[str] = (),
                  timeout: float = CLI_TIMEOUT_S, check: bool = True) -> CliResult:
    """Publish ``payload`` (sent on stdin, so any bytes) with mosquitto_pub.

    Args:
        extra: more options, e.g. connection overrides from ``connection_args``.
    """
    tool = require_tool("mosquitto_pub")
    args = [tool, *connection_args(broker, tool="pub"), *extra, "-t", topic, "-q", str(qos),
            "-s"]
    if retain:
        args.append("-r")
    return run_cli(args, stdin=payload, timeout=timeout, check=check)


def _parse(lines: Sequence[str]) -> list[CliMessage]:
    found = []
    for line in lines:
        if line.startswith(_MARK + " "):
            _, retain, payload, topic = line.split(" ", 3)
            found.append(CliMessage(topic, bytes.fromhex(payload), retain == "1"))
    return found


def mosquitto_sub(broker: Broker, *topics: str, count: int = 1, wait_s: int = 5,
                  extra: Sequence[str] = ()) -> list[CliMessage]:
    """Subscribe with mosquitto_sub until ``count`` messages arrived (e.g. retained ones).

    Args:
        wait_s: mosquitto_sub gives up after this many whole seconds (``-W``).

    Raises:
        AssertionError: fewer than ``count`` messages came within ``wait_s``.
    """
    tool = require_tool("mosquitto_sub")
    args = [tool, *connection_args(broker, tool="sub"), "-q", "1", "-C", str(count),
            "-W", str(wait_s), "-F", _FORMAT, *extra]
    for topic in topics:
        args += ["-t", topic]
    result = run_cli(args, timeout=wait_s + CLI_TIMEOUT_S)
    return _parse(result.stdout.splitlines())


class CliSubscriber:
    """mosquitto_sub in the background, until ``count`` messages or ``close()``.

    Args:
        broker: where to subscribe.
        topics: topic filters.
        count: mosquitto_sub exits after this many messages (``-C``).
        extra: more options (they come after the defaults, so they win).
    """

    def __init__(self, broker: Broker, *topics: str, count: int = 1,
                 extra: Sequence[str] = ()) -> None:
        tool = require_tool("mosquitto_sub")
        self.args = [tool, *connection_args(broker, tool="sub"), "-d", "-q", "1",
                     "-C", str(count), "-W", str(SUB_LIFETIME_S), "-F", _FORMAT, *extra]
        for topic in topics:
            self.args += ["-t", topic]
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._seen: list[str] = []
        self._proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, name="cli-subscriber-reader",
                                        daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            self._lines.put(raw.decode(errors="replace").rstrip("\n"))
        self._lines.put(None)

    def _next_line(self, deadline: float) -> str | None:
        """The next output line; None at end of output. AssertionError on time out."""
        remaining = deadline - time.monotonic()
        try:
            line = self._lines.get(timeout=max(remaining, 0.0))
        except queue.Empty:
            raise AssertionError("mosquitto_sub: nothing more in time; output so far:\n"
                                 + "\n".join(self._seen)) from None
        if line is not None:
            self._seen.append(line)
        return line

    def wait_subscribed(self, timeout: float = SUBSCRIBED_TIMEOUT_S) -> None:
        """Wait until mosquitto_sub got its SUBACK, so a publish now reaches it."""
        deadline = time.monotonic() + timeout
        while (line := self._next_line(deadline)) is not None:
            if line.startswith(_SUBSCRIBED):
                return
        raise AssertionError("mosquitto_sub ended before its SUBACK:\n" + "\n".join(self._seen))

    def messages(self, timeout: float = CLI_TIMEOUT_S) -> list[CliMessage]:
        """Wait for mosquitto_sub to exit (``count`` reached) and parse what it printed.

        Raises:
            AssertionError: it did not exit in time, or exited with an error.
        """
        deadline = time.monotonic() + timeout
        while self._next_line(deadline) is not None:
            pass
        code = self._proc.wait(CLOSE_TIMEOUT_S)
        if code != 0:
            raise AssertionError(f"mosquitto_sub exited {code}:\n" + "\n".join(self._seen))
        return _parse(self._seen)

    def close(self) -> None:
        """Stop mosquitto_sub (if still running) and its reader thread; idempotent."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(CLOSE_TIMEOUT_S)
        self._reader.join(CLOSE_TIMEOUT_S)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> CliSubscriber:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
