"""A throwaway PKI for TLS tests, made with the openssl CLI (no private key is checked in).

Elliptic-curve keys keep generation fast (a few ms each), so one PKI per session is cheap.
The certificates carry the extensions strict verifiers want (key identifiers, key usage,
extended key usage, subjectAltName), so they stay valid under Python's stricter defaults.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.integration.support.tools import require_tool

VALIDITY_DAYS: Final = 7
OPENSSL_TIMEOUT_S: Final = 30.0

# Extension sections for `openssl req -x509 -extensions` / `openssl x509 -extensions`.
_EXTENSIONS: Final = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""

_NEW_EC_KEY: Final = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True, slots=True)
class Pki:
    """Files of the test PKI.

    ``ca_file`` signed the server and client certificates. ``other_ca_file`` is an unrelated
    CA: a client trusting only it must refuse the broker, and the broker must refuse
    ``other_client_cert`` (which it signed).
    """

    directory: Path
    ca_file: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_file: Path
    other_client_cert: Path
    other_client_key: Path


def _openssl(*args: str) -> None:
    openssl = require_tool("openssl")
    result = subprocess.run([openssl, *args], capture_output=True, text=True,
                            timeout=OPENSSL_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({result.returncode}):\n"
                           f"{result.stderr}")


def _make_ca(directory: Path, name: str, config: Path) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl("req", "-x509", "-new", *_NEW_EC_KEY, "-keyout", str(key), "-out", str(cert),
             "-days", str(VALIDITY_DAYS), "-subj", f"/CN=magtek-bridge test {name}",
             "-config", str(config), "-extensions", "ca")
    return cert, key


def _make_leaf(directory: Path, name: str, *, common_name: str, kind: str,
               ca: tuple[Path, Path], config: Path) -> tuple[Path, Path]:
    cert, key, csr = (directory / f"{name}{ext}" for ext in (".crt", ".key", ".csr"))
    _openssl("req", "-new", *_NEW_EC_KEY, "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={common_name}", "-config", str(config))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", str(cert), "-days", str(VALIDITY_DAYS),
             "-extfile", str(config), "-extensions", kind)
    return cert, key


def make_pki(directory: Path) -> Pki:
    """Generate a CA, a server certificate for 127.0.0.1/localhost, a client certificate
    and an unrelated CA with its own client certificate, all under ``directory``.

    Raises:
        RuntimeError: an openssl command failed (its stderr is in the message).
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "extensions.cnf"
    config.write_text(_EXTENSIONS)
    ca = _make_ca(directory, "ca", config)
    server = _make_leaf(directory, "server", common_name="localhost", kind="server", ca=ca,
                        config=config)
    client = _make_leaf(directory, "client", common_name="magtek-bridge-test-client",
                        kind="client", ca=ca, config=config)
    other_ca = _make_ca(directory, "other-ca", config)
    other_client = _make_leaf(directory, "other-client", common_name="stranger",
                              kind="client", ca=other_ca, config=config)
    return Pki(directory=directory, ca_file=ca[0], ca_key=ca[1], server_cert=server[0],
               server_key=server[1], client_cert=client[0], client_key=client[1],
               other_ca_file=other_ca[0], other_client_cert=other_client[0],
               other_client_key=other_client[1])
