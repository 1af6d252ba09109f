"""Moves outbox entries into MQTT, a small window at a time, and forgets them on the ack.

Why the courier and not the MQTT layer keeps the backlog: a client library holds
unacknowledged messages only in memory, re-sends its whole in-flight backlog at once after a
reconnect, and re-sends a message the broker refused as too large on every reconnect, jamming
everything behind it. So at most ``window`` messages per connection are in flight, and
``MqttLink`` never re-sends anything across connections; the rest waits in the (spooled)
outbox.

Carriers: a reader's own MQTT session carries its messages while the reader is attached.
Without one (unplugged during an outage, or leftovers from a previous run) the bridge's own
session carries them. An outbox changes carrier only when nothing is in flight, so order holds.

Threads: everything here runs on the I/O loop's thread (``pump_once`` is one of its turn
hooks; acks arrive there from the links), the thread that also drives every MQTT connection: no
locks. Readers' threads only hand entries over (``enqueue``: a deque append and at most one
wake-up per turn). The spool gets each turn's writes in one transaction, never on a read
thread, and only entries still unacknowledged after ``SPOOL_AFTER`` (group commit). Without a
loop (the model test) the caller turns the pump itself.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Final

import structlog

from bridge.carriers import Carriers, _Detach
from bridge.metrics import Metrics
from bridge.mqtt.encoding import (
    encode_user_properties,
    encoded_publish_size,
)
from bridge.mqtt.link import MqttLink
from bridge.mqtt.loop import IoLoop
from bridge.outbox import DropReason, Entry, Outbox, OutboxLimits
from bridge.spool import Spool

_log = structlog.get_logger("bridge.courier")

DEFAULT_WINDOW: Final = 16  # per connection; bounds what one connection holds unacknowledged
_GAUGES_EVERY: Final = 0.25
# Group commit: a new entry reaches the spool once it has waited this long unacknowledged, at
# once when its outbox has a backlog (broker away, window full) or the bridge stops. With a
# healthy broker the ack comes first and the entry never touches the disk: the spool then costs
# almost nothing. The price: a crash (not a clean stop) loses at most this much of what was
# in flight on a healthy connection.
SPOOL_AFTER: Final = 0.05


@dataclass(frozen=True, slots=True)
class CourierOptions:
    limits: OutboxLimits = field(default_factory=OutboxLimits)
    window: int = DEFAULT_WINDOW
    qos: int = 1
    max_packet_size: int = 0  # 0: whatever the broker announces (MQTT v5 CONNACK)
    drain_timeout: float = 1.0  # a detaching reader waits this long for its acks


class Courier(Carriers):
    """Every reader's outbox, emptied by the I/O loop."""

    def __init__(
        self,
        options: CourierOptions,
        *,
        metrics: Metrics,
        spool: Spool | None = None,
        clock: Callable[[], float] = time.monotonic,
        loop: IoLoop | None = None,
    ) -> None:
        self.options = options
        self.loop = loop
        self._metrics = metrics
        self._spool = spool if spool is not None and spool.ok else None
        self._clock = clock
        self._outboxes: dict[str, Outbox] = {}
        self._carriers: dict[str, MqttLink] = {}  # serial -> attached reader link
        self._sending: dict[str, MqttLink] = {}  # serial -> link holding its in-flight entries
        self._in_flight: dict[tuple[int, int], tuple[Outbox, Entry]] = {}
        self._link_load: dict[int, int] = {}
        self._fallback: MqttLink | None = None
        self._incoming: deque[Entry] = deque()  # handed over by read threads
        self._unspooled: deque[Entry] = deque()  # accepted, not yet in the spool (oldest first)
        self._acks: deque[tuple[int, int, str | None]] = deque()
        self._taken_back: deque[MqttLink] = deque()
        self._detaching: list[_Detach] = []
        self._gauges_at = 0.0
        # Set by the pump for ``drain`` once nothing is held (only while one waits: an Event
        # set and cleared around every burst would take its lock twice per burst).
        self._empty = threading.Event()
        self._empty.set()
        self._drain_waiting = False

    # -- lifecycle (any thread) ---------------------------------------------------------------

    def start(self) -> None:
        if self._spool is not None:
            self._load_spool(self._spool)
        if self.loop is not None:
            self.loop.add_hook(self.pump_once)

    def stop(self) -> None:
        """Stop pumping; whatever is held goes to the spool first."""
        if self.loop is None or not self.loop.alive():
            self._spool_pending(flush=True)
            return
        flushed = threading.Event()

        def last_turn() -> None:
            try:
                self._spool_pending(flush=True)
            finally:
                flushed.set()

        self.loop.remove_hook(self.pump_once)
        self.loop.call_soon(last_turn)
        flushed.wait(5.0)

    @property
    def heartbeat(self) -> float:
        """When the pump last turned (the I/O loop's heartbeat)."""
        return self.loop.heartbeat if self.loop is not None else time.monotonic()

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` for every outbox to empty; how many messages remain."""
        if self.loop is not None:
            self._empty.clear()
            self._drain_waiting = True  # the pump sets ``_empty`` once nothing is held
            self.loop.wake()
        self._empty.wait(timeout)
        self._drain_waiting = False
        return sum(len(box) for box in list(self._outboxes.values())) + len(self._incoming)

    def _load_spool(self, spool: Spool) -> None:
        leftovers = spool.load(self.options.limits.ttl)
        if spool.expired_at_load:
            self._metrics.outbox_dropped.labels(DropReason.EXPIRED.value).inc(
                spool.expired_at_load)
            _log.warning("spool_expired_at_start", count=spool.expired_at_load)
        for serial, entries in leftovers.items():
            outbox = self._outbox(serial)
            for entry in entries:
                outbox.put(entry, spool=False)
            _log.info("spool_restored", serial=serial, count=len(entries))
        self._update_gauges()

    # -- readers' side (their threads) --------------------------------------------------------

    def enqueue(
        self, serial: str, topic: str, payload: bytes, user_properties: tuple[tuple[str, str], ...],
        *, wake: bool = True,
    ) -> None:
        """Accept one device message; the I/O loop takes it over on its next turn. A reader
        draining a burst passes ``wake=False`` and calls ``hand_over`` after the burst: one
        wake-up (and one turn) for the batch instead of one per message."""
        # The v5 user properties are encoded here, on the reader's thread, once: the I/O
        # loop that sends them serves every reader.
        self._incoming.append(Entry(serial=serial, topic=topic, payload=payload,
                                    user_properties=user_properties, created=self._clock(),
                                    user_section=encode_user_properties(user_properties)))
        if wake and self.loop is not None:
            self.loop.wake()

    def hand_over(self) -> None:
        """Wake the I/O loop for what ``enqueue(wake=False)`` accepted."""
        if self.loop is not None:
            self.loop.wake()

    def queued(self, serial: str) -> int:
        outbox = self._outboxes.get(serial)
        waiting = sum(1 for entry in list(self._incoming) if entry.serial == serial)
        return waiting + (0 if outbox is None else len(outbox))

    def _outbox(self, serial: str) -> Outbox:
        outbox = self._outboxes.get(serial)
        if outbox is None:
            outbox = Outbox(serial, self.options.limits, spool=self._spool,
                            on_drop=self._dropped, clock=self._clock)
            self._outboxes[serial] = outbox
            self._metrics.outbox_messages.labels(serial).set(0)
        return outbox

    def _dropped(self, entry: Entry, reason: DropReason) -> None:
        self._metrics.outbox_dropped.labels(reason.value).inc()
        age = self._clock() - entry.created
        _log.warning("outbox_message_dropped", serial=entry.serial, reason=reason.value,
                     size=len(entry.payload), age_s=round(age, 3))

    # -- links' side (the loop's thread) ------------------------------------------------------

    def published(self, link: MqttLink, mid: int, failure: str | None) -> None:
        self._acks.append((link.token, mid, failure))

    # -- the pump (the loop's thread) ---------------------------------------------------------

    def pump_once(self) -> float | None:
        """One turn: new entries, acks, expiry, then fill every window; the spool's writes
        of the whole turn in one transaction. Returns when it next needs a turn, if soon."""
        if self._spool is None:
            self._pump()
        else:
            with self._spool.batch():
                self._pump()
        due: float | None = None
        if self._unspooled:
            due = self._unspooled[0].created + SPOOL_AFTER
        if self._detaching:
            first = min(request.deadline for request in self._detaching)
            due = first if due is None else min(due, first)
        return due

    def _pump(self) -> None:
        self._take_incoming()
        self._process_acks()
        now = time.monotonic()
        if self._detaching:
            self._finish_detaches(now)
        held = 0
        backlog = False
        # Sending expires lazily; a backlog that cannot be sent is swept a few times a second.
        sweep = now - self._gauges_at >= _GAUGES_EVERY
        for outbox in self._outboxes.values():
            if len(outbox):
                if sweep:
                    outbox.expire()
                self._fill(outbox)
                held += len(outbox)
                if self._unspooled and not backlog:
                    backlog = outbox.waiting() > 0
        if self._unspooled:
            self._spool_pending(flush=backlog, now=now)
        if held == 0 and self._drain_waiting and not self._incoming:
            self._empty.set()
        if sweep:
            self._gauges_at = now
            self._update_gauges()

    def _take_incoming(self) -> None:
        if not self._incoming:
            return
        batch: list[Entry] = []
        while self._incoming:
            batch.append(self._incoming.popleft())
        if self._spool is not None:
            self._unspooled.extend(batch)
        for serial, group in groupby(batch, key=attrgetter("serial")):  # a burst: one reader
            run = list(group)
            carrier = self._carrier(serial)
            if carrier is None or not carrier.ready.is_set():
                for entry in run:
                    entry.replayed = True
            else:
                origin = (carrier.token, carrier.generation)
                for entry in run:
                    entry.origin = origin
            self._outbox(serial).put_many(run)

    def _spool_pending(self, *, flush: bool, now: float | None = None) -> None:
        """Spool what is still held after ``SPOOL_AFTER`` (everything when ``flush``)."""
        if self._spool is None:
            self._unspooled.clear()
            return
        cutoff = (time.monotonic() if now is None else now) - SPOOL_AFTER
        batch: list[Entry] = []
        pending = self._unspooled
        while pending:
            entry = pending[0]
            if not entry.settled and not flush and entry.created > cutoff:
                break
            pending.popleft()
            if not entry.settled:
                batch.append(entry)
        if batch:
            self._spool.add_many(batch)

    def _process_acks(self) -> None:
        self._process_acks_only()
        # After the acks that came before it: what an ended connection held goes out again.
        while self._taken_back:
            link = self._taken_back.popleft()
            self._spool_pending(flush=True)  # a connection ended: what it held is at risk
            for serial, holder in list(self._sending.items()):
                if holder is link:
                    self._release(serial, link)

    def _process_acks_only(self) -> None:
        if not self._acks:
            return
        delivered: dict[str, tuple[Outbox, list[Entry]]] = {}
        acks, in_flight, link_load = self._acks, self._in_flight, self._link_load
        while acks:
            link_id, mid, failure = acks.popleft()
            found = in_flight.pop((link_id, mid), None)
            if found is None:
                continue  # a status/response publish, or already taken back
            outbox, entry = found
            link_load[link_id] -= 1
            if failure is not None:
                _log.error("outbox_message_refused", serial=entry.serial, reason=failure)
                outbox.complete(entry, dropped=DropReason.REFUSED)
                continue
            done = delivered.get(outbox.serial)
            if done is None:
                done = delivered[outbox.serial] = (outbox, [])
            done[1].append(entry)
        for outbox, entries in delivered.values():
            outbox.complete_many(entries)  # one spool transaction for the batch
            replayed = sum(entry.replayed for entry in entries)
            if replayed:
                self._metrics.outbox_replayed.inc(replayed)
        for serial in [s for s in self._sending if self._outboxes[s].in_flight == 0]:
            del self._sending[serial]

    def _fill(self, outbox: Outbox) -> None:
        """Publish waiting entries of ``outbox`` while its carrier's window has room."""
        carrier = self._carrier(outbox.serial)
        if carrier is None or not carrier.ready.is_set():
            return
        holder = self._sending.get(outbox.serial)
        if holder is not None and holder is not carrier:
            return  # the old carrier still owes acks; switching now could reorder
        link_id = carrier.token
        load = self._link_load.get(link_id, 0)
        window = self.options.window
        if load >= window:
            return
        limit = self.options.max_packet_size
        if carrier.max_packet_size:
            limit = min(limit, carrier.max_packet_size) if limit else carrier.max_packet_size
        origin = (link_id, carrier.generation)
        qos = self.options.qos
        v5 = carrier.v5
        now = self._clock()
        ttl = outbox.limits.ttl
        publish = carrier.publish_message
        in_flight, sending = self._in_flight, self._sending
        sent = 0
        batch: list[Entry] = []
        handled = 0
        try:
            while load < window:
                batch, handled = outbox.take(window - load), 0
                if not batch:
                    return
                for entry in batch:
                    handled += 1
                    left = entry.remaining_ttl(ttl, now)
                    if left <= 0:  # ``take`` checks the first; a restored row may be older
                        outbox.complete(entry, dropped=DropReason.EXPIRED)
                        continue
                    live = entry.origin == origin and not entry.replayed
                    try:  # encoding too: a spooled row's properties may not encode
                        properties = entry.publish_properties(live, left) if v5 else None
                        if limit and self._oversize(entry, properties, limit):
                            outbox.complete(entry, dropped=DropReason.OVERSIZE)
                            continue
                        entry.replayed = not live
                        mid = publish(entry.topic, entry.payload, qos, properties)
                    except Exception:  # never leave an entry in flight that nobody owns
                        _log.exception("outbox_publish_failed", serial=entry.serial)
                        mid = None
                    if mid is None:
                        outbox.complete(entry, dropped=DropReason.REFUSED)
                        continue
                    sent += 1
                    if qos == 0:
                        outbox.complete(entry)
                        continue
                    in_flight[(link_id, mid)] = (outbox, entry)
                    load += 1
                    sending[outbox.serial] = carrier
        finally:
            if handled < len(batch):  # something raised: the rest of the batch was never sent
                outbox.give_back(len(batch) - handled)
            self._link_load[link_id] = load
            if sent:
                carrier.count_published(sent)  # one metric update for the batch

    def _oversize(self, entry: Entry, properties: bytes | None, limit: int) -> bool:
        """Over ``limit`` as it would go out, with the property block about to be sent."""
        size = encoded_publish_size(entry.topic, len(entry.payload),
                                    0 if properties is None else len(properties),
                                    qos=self.options.qos)
        if size > limit:
            _log.error("outbox_message_oversize", serial=entry.serial, size=size, limit=limit)
        return size > limit

    def _update_gauges(self) -> None:
        total = 0
        for serial, outbox in self._outboxes.items():
            total += outbox.bytes
            self._metrics.outbox_messages.labels(serial).set(len(outbox))
        self._metrics.outbox_bytes.set(total)


__all__ = ["DEFAULT_WINDOW", "Courier", "CourierOptions"]
