"""A real Mosquitto process on a free loopback port, configured from tests/integration/mosquitto.

Privileges: started as root, Mosquitto drops to user ``mosquitto`` unless the config says
``user root``, and that user cannot open files in root's private pytest tmp dir (the log
file fails first, then the password, ACL and key files). Started as any other user it runs
as that user and ignores ``user`` entirely (2.0.11 checks ``geteuid() == 0`` and says
nothing). So ``user root`` is written only when we are root: CI runs as root, a newcomer
does not, and both read their own tmp dir.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import string
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from tests.integration.support.pki import Pki
from tests.integration.support.tools import require_tool

HOST: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 5.0
# A free port found by binding to port 0 may be taken by someone else before mosquitto
# binds it; a fresh broker then tries again on another port, this many times in all.
PORT_ATTEMPTS: Final = 5
POLL_INTERVAL_S: Final = 0.02
PASSWD_TIMEOUT_S: Final = 10.0
LOG_TAIL_CHARS: Final = 6000
DEFAULT_USERNAME: Final = "bridge-test"

TEMPLATES: Final = Path(__file__).resolve().parents[1] / "mosquitto"
_RUNNING: Final = re.compile(r"mosquitto version \S+ running")
_ADDRESS_IN_USE: Final = "Address already in use"


class BrokerStartError(RuntimeError):
    """Mosquitto exited or did not accept connections in time (its log is in the message)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _render(name: str, **values: str) -> str:
    return string.Template((TEMPLATES / name).read_text()).substitute(values)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    """One Mosquitto process. ``stop()``/``start()`` keep the port, for outage tests.

    Attributes:
        host: always 127.0.0.1.
        port: the listener port (fixed once the broker first started).
        users: username -> password when the broker requires a password.
        pki: the certificates when the listener speaks TLS.
        require_certificate: clients must present a certificate signed by ``pki.ca_file``.
    """

    def __init__(self, workdir: Path, *, port: int | None = None,
                 users: Mapping[str, str] | None = None, acl: str | None = None,
                 pki: Pki | None = None, require_certificate: bool = False,
                 extra: str = "") -> None:
        if require_certificate and pki is None:
            raise ValueError("require_certificate needs a TLS broker (pki)")
        self._mosquitto = require_tool("mosquitto")
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.workdir = workdir
        self.users = dict(users or {})
        self.pki = pki
        self.require_certificate = require_certificate
        self.conf_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.output_path = workdir / "mosquitto.out"
        self.password_path = workdir / "passwords" if self.users else None
        self.acl_path = workdir / "acl" if acl is not None else None
        self._extra = extra
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        if self.password_path is not None:
            self._write_passwords(self.password_path)
        if self.acl_path is not None and acl is not None:
            self.acl_path.write_text(acl if acl.endswith("\n") else acl + "\n")
            self.acl_path.chmod(0o600)
        self._write_config()

    # -- what clients need --------------------------------------------------------------

    @property
    def tls(self) -> bool:
        """True when the listener speaks TLS."""
        return self.pki is not None

    @property
    def url(self) -> str:
        """``mqtt://`` or ``mqtts://`` URL of the listener."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        """The CA that signed the broker's certificate (None without TLS)."""
        return self.pki.ca_file if self.pki else None

    @property
    def client_cert(self) -> Path | None:
        """A client certificate the broker accepts (None without TLS)."""
        return self.pki.client_cert if self.pki else None

    @property
    def client_key(self) -> Path | None:
        """The key of ``client_cert``."""
        return self.pki.client_key if self.pki else None

    @property
    def username(self) -> str | None:
        """The first configured user (None on an anonymous broker)."""
        return next(iter(self.users), None)

    @property
    def password(self) -> str | None:
        """The password of ``username``."""
        name = self.username
        return self.users[name] if name is not None else None

    @property
    def running(self) -> bool:
        """The process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return self._proc.pid if self.running and self._proc is not None else None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start on ``self.port`` and wait until it accepts connections; no-op if running.

        Raises:
            BrokerStartError: it exited or did not listen within ``timeout``.
        """
        self._launch(allow_new_port=False, timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        """Stop, then start again on the same port (clients see a broker outage)."""
        self.stop()
        self.start(timeout)

    def log_text(self) -> str:
        """Everything Mosquitto logged, across restarts."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def output_text(self) -> str:
        """What Mosquitto wrote to stdout/stderr (warnings before its log file opens)."""
        if not self.output_path.exists():
            return ""
        return self.output_path.read_text(errors="replace")

    def launch_first(self, timeout: float = START_TIMEOUT_S) -> None:
        """First start of a broker nobody has seen yet: may move to another free port if
        the chosen one was taken meanwhile. Use ``start()`` once the port is known."""
        self._launch(allow_new_port=True, timeout=timeout)

    # -- internals ----------------------------------------------------------------------

    def _write_passwords(self, path: Path) -> None:
        passwd = require_tool("mosquitto_passwd")
        for index, (name, secret) in enumerate(self.users.items()):
            create = ["-c"] if index == 0 else []
            subprocess.run([passwd, *create, "-b", str(path), name, secret], check=True,
                           capture_output=True, timeout=PASSWD_TIMEOUT_S)
        # Later Mosquitto versions refuse world-readable password files.
        path.chmod(0o600)

    def _write_config(self) -> None:
        # Mosquitto runs as root only when we are root (see the module docstring).
        user_line = "user root" if os.geteuid() == 0 else ""
        parts = [_render("base.conf", port=str(self.port), log_file=str(self.log_path),
                         user_line=user_line)]
        if self.password_path is not None:
            parts.append(_render("auth.conf", password_file=str(self.password_path)))
        else:
            parts.append(_render("anonymous.conf"))
        if self.acl_path is not None:
            parts.append(_render("acl.conf", acl_file=str(self.acl_path)))
        if self.pki is not None:
            parts.append(_render(
                "tls.conf", ca_file=str(self.pki.ca_file), server_cert=str(self.pki.server_cert),
                server_key=str(self.pki.server_key),
                require_certificate="true" if self.require_certificate else "false"))
        if self._extra:
            parts.append(self._extra)
        self.conf_path.write_text("\n".join(part.rstrip("\n") for part in parts) + "\n")

    def _launch(self, *, allow_new_port: bool, timeout: float) -> None:
        if self.running:
            return
        attempts = PORT_ATTEMPTS if allow_new_port else 1
        failure = ""
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()
                self._write_config()
            failure = self._spawn(timeout)
            if not failure:
                return
            if _ADDRESS_IN_USE not in failure:
                break
        raise BrokerStartError(failure)

    def _spawn(self, timeout: float) -> str:
        """Start the process and wait for it to listen; '' on success, else why not."""
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        out_offset = self.output_path.stat().st_size if self.output_path.exists() else 0
        with self.output_path.open("ab") as output:
            proc = subprocess.Popen([self._mosquitto, "-c", str(self.conf_path)],
                                    stdin=subprocess.DEVNULL, stdout=output,
                                    stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # "running" is logged only after every listener is bound, so a connect that
            # succeeds before it may be reaching someone else who holds the port.
            if _RUNNING.search(self._log_since(log_offset)) and _accepts(self.port):
                self._proc = proc
                return ""
            try:
                code = proc.wait(POLL_INTERVAL_S)
            except subprocess.TimeoutExpired:
                continue
            return self._failure(f"exited with status {code}", log_offset, out_offset)
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)
        return self._failure(f"did not accept connections within {timeout} s", log_offset,
                             out_offset)

    def _log_since(self, offset: int) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def _failure(self, why: str, log_offset: int, out_offset: int) -> str:
        output = self.output_text().encode()[out_offset:].decode(errors="replace")
        return (f"mosquitto -c {self.conf_path} on {self.host}:{self.port} {why}\n"
                f"--- config ---\n{self.conf_path.read_text()}"
                f"--- log ---\n{self._log_since(log_offset)[-LOG_TAIL_CHARS:]}"
                f"--- stdout/stderr ---\n{output[-LOG_TAIL_CHARS:]}")


class BrokerFactory:
    """Makes brokers under one directory and stops them all on ``close()``.

    Args:
        root: a directory of its own (one sub-directory per broker).
        session_pki: returns the session's test PKI; called only for ``tls=True``.
    """

    def __init__(self, root: Path, session_pki: Callable[[], Pki]) -> None:
        self._root = root
        self._session_pki = session_pki
        self.brokers: list[Broker] = []

    def __call__(self, *, start: bool = True, auth: bool = False,
                 users: Mapping[str, str] | None = None, acl: str | None = None,
                 tls: bool | Pki = False, require_certificate: bool = False,
                 port: int | None = None, extra: str = "") -> Broker:
        """A new broker (started unless ``start=False``).

        Args:
            start: start it now and wait until it accepts connections.
            auth: require a password; without ``users`` one user ``bridge-test`` with a
                random password is made (``broker.username``/``broker.password``).
            users: username -> password (implies ``auth``).
            acl: mosquitto ACL file text, e.g. ``"user alice\\ntopic write a/#\\n"``.
            tls: TLS on the listener, with the session PKI (True) or the given one.
            require_certificate: mutual TLS (needs ``tls``).
            port: a fixed port instead of a free one.
            extra: more config lines, appended verbatim.
        """
        if users is None and auth:
            users = {DEFAULT_USERNAME: secrets.token_urlsafe(12)}
        pki = tls if isinstance(tls, Pki) else (self._session_pki() if tls else None)
        workdir = self._root / f"broker{len(self.brokers)}"
        broker = Broker(workdir, port=port, users=users, acl=acl, pki=pki,
                        require_certificate=require_certificate, extra=extra)
        self.brokers.append(broker)
        if start:
            if port is None:
                broker.launch_first()
            else:
                broker.start()
        return broker

    def close(self) -> None:
        """Stop every broker made here."""
        for broker in self.brokers:
            broker.stop()
