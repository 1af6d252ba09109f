"""Logging setup (the only module that configures structlog) and card-data redaction.

JSON lines when stderr is not a terminal (journald, Docker), a readable console otherwise.
Every event passes ``redact_event`` before it is rendered: payment data flows through the
bridge but is not ours (PROTOCOL.md §9), so PAN-like digit runs (also grouped by spaces, dots
or dashes, and in ASCII-hex form), track data, long hex blobs and secrets are masked whatever
the level and whoever logged them. Lines from the standard library's ``logging`` (websockets,
httpx, asyncio, ...), warnings and uncaught thread exceptions take the same way: one format,
one redaction, nothing written to stderr beside it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

MASK: Final = "<masked>"
_SECRET_KEYS: Final = re.compile(r"pass|secret|token|authorization|credential|api_?key", re.I)
# 13-19 digits, optionally grouped by spaces, dots or dashes: PAN-like.
_PAN: Final = re.compile(r"(?<!\d)(?:\d[ .-]?){12,18}\d(?!\d)")
# The same as ASCII hex ("3437363137..."): digits are 0x30-0x39, separators 0x20/0x2D/0x2E,
# hex bytes themselves maybe spaced, dashed or colon-separated.
_ASCII_HEX_PAN: Final = re.compile(r"(?:3\d[ :.-]?(?:2[0dDeE][ :.-]?)?){12,18}3\d")
# Secrets in URLs: ?token=..., &password=..., and user:password@host.
_URL_SECRET: Final = re.compile(
    r"(?i)([?&](?:access_?)?(?:token|password|passwd|pass|secret|api_?key|auth)=)[^&#\s\"']+")
_URL_USERINFO: Final = re.compile(r"(://[^/@:\s\"']+:)[^/@\s\"']+@")
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
    text = _ASCII_HEX_PAN.sub(MASK, text)
    text = _PAN.sub(MASK, text)
    if "=" in text or "@" in text:
        text = _URL_SECRET.sub(rf"\1{MASK}", text)
        text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    return text


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
    numeric_level = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(out, numeric_level, renderer)


class _BridgeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours on the root logger (replaced, never stacked, when logging is set up again)."""


def _route_stdlib_logging(out: TextIO, level: int, renderer: Any) -> None:
    """Send the standard library's log records through the same processors and renderer."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )
    handler = _BridgeHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _BridgeHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_crash


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    # The default hook prints a raw traceback to stderr: outside the format and the redaction.
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    structlog.get_logger("bridge.threads").error(
        "thread_crashed", thread=name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


__all__ = ["MASK", "configure_logging", "redact_event", "redact_text"]
