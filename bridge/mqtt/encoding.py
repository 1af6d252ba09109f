"""MQTT wire details the bridge computes itself: PUBLISH sizes and properties, and what a
TLS failure means in an operator's words. Pure functions.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence


def publish_packet_size(
    topic: str,
    payload: bytes,
    user_properties: Sequence[tuple[str, str]] = (),
    *,
    qos: int = 1,
    expiry: int | None = None,
    correlation_data: bytes | None = None,
    v5: bool = False,
) -> int:
    """Bytes of the PUBLISH packet on the wire, to hold against the broker's maximum (``v5``:
    the property length is there even with no property)."""
    properties = sum(5 + len(k.encode()) + len(v.encode()) for k, v in user_properties)
    if expiry is not None:
        properties += 5
    if correlation_data is not None:
        properties += 3 + len(correlation_data)
    block = 0
    if v5 or user_properties or expiry is not None or correlation_data is not None:
        block = len(encode_varint(properties)) + properties  # v5: at least its length
    return encoded_publish_size(topic, len(payload), block, qos=qos)


def encoded_publish_size(topic: str, payload_size: int, properties_size: int, *,
                         qos: int) -> int:
    """Bytes of the PUBLISH on the wire given its encoded property block's size (0 on MQTT
    3.1.1): what the courier holds against a limit with the block it is about to send."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + payload_size + properties_size
    return 1 + len(encode_varint(remaining)) + remaining


def encode_varint(value: int) -> bytes:
    """MQTT's variable byte integer (remaining lengths, property lengths)."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_string(text: str | bytes) -> bytes:
    """MQTT's length-prefixed UTF-8 string / binary data."""
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def encode_publish_properties(
    user_properties: Sequence[tuple[str, str]] = (),
    *,
    correlation_data: bytes | None = None,
    expiry_interval: int | None = None,
) -> bytes:
    """MQTT v5 PUBLISH properties as on the wire (length prefix included), §3.3.2.3."""
    body = bytearray()
    if expiry_interval is not None:
        body += b"\x02" + expiry_interval.to_bytes(4, "big")
    if correlation_data is not None:
        body += b"\x09" + encode_string(correlation_data)
    body += encode_user_properties(user_properties)
    return encode_varint(len(body)) + bytes(body)


def encode_user_properties(user_properties: Sequence[tuple[str, str]]) -> bytes:
    """The user properties of a v5 property block, without its length: a device message's
    are encoded once, by its read thread, not on the I/O loop at every send."""
    section = b""
    for key, value in user_properties:
        raw_key, raw_value = key.encode(), value.encode()
        section += (b"\x26" + len(raw_key).to_bytes(2, "big") + raw_key
                    + len(raw_value).to_bytes(2, "big") + raw_value)
    return section


def message_properties(user_section: bytes, expiry_interval: int) -> bytes:
    """A device message's v5 PUBLISH properties: what ``encode_publish_properties`` gives
    for the same user properties (``user_section`` from ``encode_user_properties``) and
    expiry, from the pre-encoded user properties."""
    length = 5 + len(user_section)
    head = bytes((length, 2)) if length < 128 else encode_varint(length) + b"\x02"
    return head + expiry_interval.to_bytes(4, "big") + user_section


def describe_tls_failure(exc: BaseException) -> str | None:
    """Say why a TLS handshake failed, in an operator's words (not OpenSSL's)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = (exc.verify_message or str(exc)).lower()
        if "hostname" in message or "ip address mismatch" in message:
            return f"TLS: broker certificate does not match the host name ({exc.verify_message})"
        if "expired" in message:
            return "TLS: broker certificate has expired"
        if "not yet valid" in message:
            return "TLS: broker certificate is not yet valid (check the clock)"
        if "self-signed" in message or "issuer" in message or "unknown ca" in message:
            return ("TLS: broker certificate is signed by an unknown CA "
                    f"({exc.verify_message}); check mqtt.tls.ca_file")
        return f"TLS: broker certificate rejected ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return describe_tls_alert(f"{exc.reason or ''} {exc}")
    return None


def describe_tls_alert(text: str) -> str | None:
    """The same for an SSL error known only by its text: with TLS 1.3 the broker refuses a
    client certificate after the handshake, and only the next read says so."""
    reason = text.upper()
    if "SSL" in reason or "TLS" in reason:
        if "CERTIFICATE_REQUIRED" in reason:
            return "TLS: the broker requires a client certificate (mqtt.tls.cert_file)"
        if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
            return f"TLS: the broker refused our client certificate ({text.strip()})"
        if "EXPIRED" in reason:
            return f"TLS: the broker refused our client certificate as expired ({text.strip()})"
        if ("WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason
                or "UNEXPECTED_EOF" in reason or "EOF OCCURRED" in reason):
            return ("TLS: the broker closed or did not answer the TLS handshake "
                    "(a plain MQTT port?)")
        return f"TLS: handshake failed ({text.strip()})"
    return None


__all__ = [
    "describe_tls_alert",
    "describe_tls_failure",
    "encode_publish_properties",
    "encode_string",
    "encode_user_properties",
    "encode_varint",
    "encoded_publish_size",
    "message_properties",
    "publish_packet_size",
]
