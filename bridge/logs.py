"""Logging setup (the only module that configures structlog) and card-data redaction.

JSON lines when stderr is not a terminal (journald, Docker), a readable console otherwise.
Every event passes ``redact_event`` before it is rendered: payment data flows through the
bridge but is not ours (PROTOCOL.md §9), so PAN-like digit runs, track data, long hex blobs
and secrets are masked whatever the level and whoever logged them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

MASK: Final = "<masked>"
_SECRET_KEYS: Final = re.compile(r"pass|secret|token|authorization|credential|api_?key", re.I)
# 13-19 digits, optionally grouped by spaces or dashes: PAN-like.
_PAN: Final = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
# Track 2 (";PAN=YYMM...") and track 1 ("%B PAN ^ NAME ^").
_TRACK: Final = re.compile(r";\d{6,19}=\d*\??|%B\d{6,19}\^[^^]*\^\d*\??")
# Hex blobs over 16 bytes may hold card data (PROTOCOL.md §9).
_HEX_BLOB: Final = re.compile(r"[0-9A-Fa-f]{33,}")
_MAX_DEPTH: Final = 6


def redact_text(text: str) -> str:
    """Mask anything in ``text`` that could be card data."""
    if len(text) < 13:  # too short for any pattern: the common case stays cheap
        return text
    text = _TRACK.sub(MASK, text)
    text = _HEX_BLOB.sub(MASK, text)
    return _PAN.sub(MASK, text)


def _redact_value(key: str, value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return MASK if _SECRET_KEYS.search(key) and value else redact_text(value)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if depth >= _MAX_DEPTH:
        return MASK
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v, depth + 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) >= 13:
        return redact_text(str(value))
    return value


def redact_event(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask card data and secrets in every field of the event."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(key, value, 0)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog for the process.

    Args:
        level: ``debug`` .. ``critical``.
        fmt: ``json``, ``console``, or ``auto`` (console only on a terminal).
        stream: where lines go (default stderr).
    """
    out = stream if stream is not None else sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(level.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


__all__ = ["MASK", "configure_logging", "redact_event", "redact_text"]
