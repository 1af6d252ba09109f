"""Opening a session's connections: the CONNECT we send, the TLS context, and why an
attempt failed in an operator's words (logged once, then summarised: a broker that is down
for hours must not fill the log with one line per retry)."""

from __future__ import annotations

import ssl
import time
from typing import Any

from bridge.mqtt import packets
from bridge.mqtt.encoding import describe_tls_failure
from bridge.mqtt.options import LinkOptions, Publication, TlsOptions, failure_reason
from bridge.mqtt.wire import ConnectionClosed


def keepalive_for(options: LinkOptions) -> int:
    """The broker drops us after 1.5 keepalives of silence and we ping after one: half the
    configured value makes it a bound on noticing a dead (black-holed) connection."""
    return max(1, options.keepalive // 2)


def connect_packet(options: LinkOptions, client_id: str, *, will: Publication | None,
                   session_expiry: int) -> bytes:
    v5 = options.protocol == "5"
    return packets.encode_connect(
        client_id, keepalive=keepalive_for(options), v5=v5,
        clean_start=session_expiry == 0,
        session_expiry=session_expiry if v5 else 0,
        maximum_packet_size=options.max_incoming_packet if v5 else 0,
        username=options.username or None,
        password=options.password if options.username else None,
        will=will)


def tls_context(tls: TlsOptions) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file:
        context.load_verify_locations(cafile=tls.ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=tls.key_password)
    context.check_hostname = tls.check_hostname
    return context


def tls_reason(options: LinkOptions, exc: BaseException) -> str | None:
    """What a failed attempt means when TLS is on (None: not a TLS matter)."""
    if options.tls is None:
        return None
    reason = describe_tls_failure(exc)
    if reason is None and isinstance(exc, ConnectionResetError | BrokenPipeError
                                     | ConnectionClosed):
        reason = ("TLS: the broker closed the connection during the TLS handshake "
                  "(a plain MQTT port, or it refused us)")
    return reason


class ConnectFailures:
    """Counts failed attempts since the last success; warns about the first, then once per
    ``interval`` with the count (the attempts in between go to debug)."""

    def __init__(self, options: LinkOptions, log: Any) -> None:
        self._options = options
        self._log = log
        self.count = 0
        self._logged_at: float | None = None

    def failed(self, exc: BaseException, *, last_error: str | None) -> str:
        """One attempt failed with ``exc``: logs it and returns the new ``last_error``."""
        o = self._options
        where = f"{o.host}:{o.port}"
        reason = tls_reason(o, exc)
        if reason is not None:
            error = f"{reason} [{where}]"
            if error != last_error:
                self._log.error("mqtt_tls_failed", reason=reason, host=o.host, port=o.port)
            return error
        self.log("mqtt_connect_failed", host=o.host, port=o.port,
                 reason=failure_reason(exc))
        return f"cannot connect to {where}: {exc}"

    def log(self, event: str, *, quiet: bool = False, **fields: Any) -> None:
        self.count += 1
        if quiet:
            return
        now = time.monotonic()
        interval = self._options.failure_log_interval
        if self._logged_at is None or now - self._logged_at >= interval:
            self._logged_at = now
            self._log.warning(event, failed_attempts=self.count,
                              next_report_in_s=round(interval), **fields)
        else:
            self._log.debug(event, failed_attempts=self.count, **fields)

    def succeeded(self) -> None:
        if self.count:
            self._log.info("mqtt_connect_recovered", failed_attempts=self.count)
        self.count, self._logged_at = 0, None


__all__ = ["ConnectFailures", "connect_packet", "keepalive_for", "tls_context", "tls_reason"]
