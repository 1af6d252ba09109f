"""Recent replies to create and update, so a redelivered request is answered, not run twice.

Keyed by the requesting client and its ``correlation_id``, and bound to a digest of the
request. MQTT v5 does not show a subscriber who published a message, so the requester is what
the message carries: its v5 response topic (each client has its own inbox) or, without one,
the ``client_id`` the client puts in the body. Two clients with simple counters therefore
never share an entry as long as either gives a response topic or a ``client_id``; when neither
does, they share one, and the digest makes that safe: the same key with a different request
is refused (``BridgeCode.CORRELATION_REUSED``), never answered with the other request's
result. Only successful replies are kept: a failed request may be retried with the same id.

Also here: the bounds on what a request may be (bytes, JSON nesting) and its digest.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final, Literal

ENVELOPE: Final = ("correlation_id", "client_id", "relay")
MAX_ENTRIES: Final = 1024

Claim = Literal["run", "replay", "conflict"]


def request_digest(op: str, body: dict[str, Any]) -> str:
    """SHA-256 of the request without its correlation id and client id (same request, same
    digest, whatever the key order)."""
    core = {k: v for k, v in body.items() if k not in ("correlation_id", "client_id")}
    text = json.dumps([op, core], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def too_deep(payload: bytes, limit: int) -> bool:
    """Does the JSON text nest arrays/objects deeper than ``limit``? (Decided without parsing
    it: the parser itself would raise RecursionError on 100 000 levels.)"""
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


@dataclass
class _Entry:
    digest: str
    done: threading.Event = field(default_factory=threading.Event)
    payload: bytes | None = None


class ReplyCache:
    """Key -> (digest, reply); a second request with the key waits for the first to finish."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()

    def claim(self, key: tuple[str, str, str], digest: str, wait: float
              ) -> tuple[Claim, bytes | None]:
        """``("run", None)``: run it and call ``finish``; ``("replay", payload)``: send the
        earlier reply; ``("conflict", None)``: the key belongs to a different request."""
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is None:
                    self._entries[key] = _Entry(digest)
                    while len(self._entries) > self._max:
                        self._entries.popitem(last=False)
                    return "run", None
                if entry.digest != digest:
                    return "conflict", None
                if entry.payload is not None:
                    self._entries.move_to_end(key)
                    return "replay", entry.payload
            # The same request is running (a QoS 1 redelivery racing the first copy).
            if not entry.done.wait(wait):
                return "run", None  # give up waiting; at worst MPPG sees it twice
            # Finished: a reply to replay, or a failure (forgotten: look again).

    def finish(self, key: tuple[str, str, str], payload: bytes | None) -> None:
        """The run's reply (kept), or ``None`` when it failed (forgotten)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            if payload is None:
                del self._entries[key]
            else:
                entry.payload = payload
            entry.done.set()


__all__ = ["ENVELOPE", "ReplyCache", "request_digest", "too_deep"]
