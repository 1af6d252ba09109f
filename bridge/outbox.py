"""Per-reader store-and-forward queue of device messages waiting for the broker's ack.

Pure bookkeeping, no I/O of its own (the spool, if any, is injected): ``Courier`` decides when
to publish. Bounded by count and bytes (the oldest entry goes first) and by age (a transaction
result delivered hours late is harmful). Every drop is reported through ``on_drop`` with a
closed reason, so nothing disappears silently.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from typing import Final, Protocol

from bridge.mqtt.encoding import encode_user_properties, message_properties

DEFAULT_TTL: Final = 300.0
_REPLAYED_SECTION: Final = encode_user_properties((("replayed", "true"),))  # a late delivery


class DropReason(StrEnum):
    FULL = "full"  # bound reached: the oldest entry made room
    EXPIRED = "expired"  # older than its time-to-live
    OVERSIZE = "oversize"  # larger than the broker accepts
    REFUSED = "refused"  # the broker acknowledged with a failure reason code


@dataclass(slots=True)
class Entry:
    """One device message on its way to the broker."""

    serial: str
    topic: str
    payload: bytes
    user_properties: tuple[tuple[str, str], ...]
    # time.monotonic() when accepted: a Pi without a clock chip steps its wall clock at NTP
    # sync, which must not expire (or stretch) anything. The spool converts to wall time.
    created: float
    replayed: bool = False  # not delivered live: held through an outage, a replug or a restart
    spool_id: int | None = None
    # (id of the carrier link, its connection generation) when accepted live; a message sent
    # on any other connection arrives late and is marked replayed.
    origin: tuple[int, int] = field(default=(0, -1))
    settled: bool = False  # acknowledged or dropped: nothing left to do with it
    # ``user_properties`` as encoded in a v5 PUBLISH (``encode_user_properties``), or None
    # until encoded (an entry read back from the spool).
    user_section: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic)

    def remaining_ttl(self, ttl: float, now: float) -> float:
        return ttl - (now - self.created)

    def publish_properties(self, live: bool, remaining: float) -> bytes:
        """Its v5 PUBLISH property block: the user properties (pre-encoded by the read thread;
        encoded here for a row read back from the spool), ``replayed`` unless it goes out
        live, and the expiry left of its time-to-live (``remaining`` seconds)."""
        section = self.user_section
        if section is None:
            section = self.user_section = encode_user_properties(self.user_properties)
        return message_properties(section if live else section + _REPLAYED_SECTION,
                                  expiry_for(remaining))


def expiry_for(remaining: float) -> int:
    """The MQTT v5 message expiry for ``remaining`` seconds of time-to-live: whole seconds,
    rounded up, and never 0 (which would mean "no expiry")."""
    return max(1, math.ceil(remaining))


class SpoolWriter(Protocol):
    """What the outbox needs from a durable spool (``bridge.spool.Spool``)."""

    def add(self, entry: Entry) -> None: ...

    def remove(self, entries: Iterable[Entry]) -> None: ...


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    max_messages: int = 10_000
    max_bytes: int = 16 << 20
    ttl: float = DEFAULT_TTL


DropHandler = Callable[[Entry, DropReason], None]


class Outbox:
    """FIFO of entries not yet acknowledged, oldest first. Thread-safe.

    Entries stay here while in flight (handed to MQTT, no ack yet) so that the bounds cover
    everything we hold, and so that a lost connection can hand them back in order.
    """

    def __init__(
        self,
        serial: str,
        limits: OutboxLimits,
        *,
        spool: SpoolWriter | None = None,
        on_drop: DropHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.serial = serial
        self.limits = limits
        self._spool = spool
        self._on_drop = on_drop
        self._clock = clock
        self._entries: deque[Entry] = deque()
        self._in_flight = 0  # the first ``_in_flight`` entries have been handed out
        self._bytes = 0
        self.lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def put(self, entry: Entry, *, spool: bool = True) -> None:
        """Append, spooling it first, and make room by dropping the oldest waiting entries."""
        with self.lock:
            if spool and self._spool is not None and entry.spool_id is None:
                self._spool.add(entry)
            self._entries.append(entry)
            self._bytes += entry.size
            self._enforce_bounds()

    def put_many(self, entries: list[Entry]) -> None:
        """Append a burst (not spooled here: the courier spools what stays held); the bounds
        then hold exactly as after a ``put`` of each in turn (the oldest waiting go)."""
        with self.lock:
            self._entries.extend(entries)
            size = 0
            for entry in entries:
                size += len(entry.payload) + len(entry.topic)
            self._bytes += size
            self._enforce_bounds()

    def _enforce_bounds(self) -> None:
        # In-flight entries are the broker's business now: only waiting ones are dropped.
        limits = self.limits
        while (
            len(self._entries) > self._in_flight + 1
            and (len(self._entries) > limits.max_messages or self._bytes > limits.max_bytes)
        ):
            victim = self._entries[self._in_flight]
            del self._entries[self._in_flight]
            self._discard(victim, DropReason.FULL)

    def _forget(self, entries: list[Entry]) -> None:
        """Bookkeeping for entries already taken out of the queue: bytes and spool rows."""
        size = 0
        spooled: list[Entry] = []
        for entry in entries:
            entry.settled = True
            size += len(entry.payload) + len(entry.topic)
            if entry.spool_id is not None:
                spooled.append(entry)
        self._bytes -= size
        if spooled and self._spool is not None:
            self._spool.remove(spooled)

    def _discard(self, entry: Entry, reason: DropReason) -> None:
        self._forget([entry])
        if self._on_drop is not None:
            self._on_drop(entry, reason)

    def next_to_send(self) -> Entry | None:
        """The oldest entry not yet in flight, after dropping expired ones; marks it in flight."""
        taken = self.take(1)
        return taken[0] if taken else None

    def take(self, count: int) -> list[Entry]:
        """Up to ``count`` of the oldest entries not yet in flight, after dropping the expired
        ones at the front; marks them in flight. One TTL check and one lock a burst: entries
        are in creation order but for restored rows (a wall clock stepped back), so the
        sender still checks each one's own time-to-live."""
        with self.lock:
            entries = self._entries
            start = self._in_flight
            if start == len(entries):
                return []
            if entries[start].remaining_ttl(self.limits.ttl, self._clock()) <= 0:
                self.expire()
                if start == len(entries):
                    return []
            end = min(len(entries), start + count)
            self._in_flight = end
            if start == 0 and end == len(entries):
                return list(entries)
            return list(islice(entries, start, end))

    def give_back(self, count: int) -> None:
        """The last ``count`` entries ``take`` handed out were not sent: they wait again."""
        with self.lock:
            self._in_flight -= count

    def waiting(self) -> int:
        with self.lock:
            return len(self._entries) - self._in_flight

    def complete(self, entry: Entry, *, dropped: DropReason | None = None) -> None:
        """The broker acknowledged ``entry`` (or refused it: ``dropped``); forget it."""
        with self.lock:
            for index in range(self._in_flight):
                if self._entries[index] is entry:
                    del self._entries[index]
                    self._in_flight -= 1
                    break
            else:
                return
            if dropped is not None:
                self._discard(entry, dropped)
            else:
                self._forget([entry])

    def complete_many(self, entries: list[Entry]) -> None:
        """Several acknowledgements at once: one spool transaction."""
        with self.lock:
            done = {id(e) for e in entries}
            removed: list[Entry] = []
            queue = self._entries
            # Acks come in order almost always: take them off the front, without touching
            # the rest (a backlog of thousands behind them must not be copied per ack).
            while self._in_flight and id(queue[0]) in done:
                removed.append(queue.popleft())
                self._in_flight -= 1
            if len(removed) < len(done):
                kept: deque[Entry] = deque()
                late = 0
                for index, entry in enumerate(queue):
                    if index < self._in_flight and id(entry) in done:
                        removed.append(entry)
                        late += 1
                    else:
                        kept.append(entry)
                self._entries = kept
                self._in_flight -= late
            self._forget(removed)

    def return_in_flight(self) -> int:
        """The carrier went away unacknowledged: everything in flight waits again, in order,
        and will be marked replayed. Returns how many came back."""
        with self.lock:
            count = self._in_flight
            for index in range(count):
                self._entries[index].replayed = True
            self._in_flight = 0
            return count

    def expire(self) -> int:
        """Drop waiting entries past their time-to-live (also done lazily when sending).

        Entries are in creation order (a restart's leftovers come first and are older), so
        the first one still alive ends the scan: cheap however long the backlog.
        """
        with self.lock:
            now = self._clock()
            dropped = 0
            while self._in_flight < len(self._entries):
                entry = self._entries[self._in_flight]
                if entry.remaining_ttl(self.limits.ttl, now) > 0:
                    break
                del self._entries[self._in_flight]
                self._discard(entry, DropReason.EXPIRED)
                dropped += 1
            return dropped


__all__ = ["DEFAULT_TTL", "DropReason", "Entry", "Outbox", "OutboxLimits", "SpoolWriter",
           "expiry_for"]
