"""Moves outbox entries into MQTT, a small window at a time, and forgets them on the ack.

Why the bridge and not paho keeps the backlog: paho holds unacknowledged messages only in
memory, re-sends its whole in-flight backlog at once after a reconnect, and re-sends a message
the broker refused as too large on every reconnect, jamming everything behind it. So at most
``window`` messages per connection sit inside paho; the rest wait in the (spooled) outbox.

Carriers: a reader's own MQTT session carries its messages while the reader is attached.
Without one (unplugged during an outage, or leftovers from a previous run) the bridge's own
session carries them. An outbox changes carrier only when nothing is in flight, so order holds.

Threads: readers call ``enqueue`` (sends at once when the window allows: no thread hop on the
hot path); paho's thread only records acks; the ``outbox-pump`` thread handles acks,
reconnects, expiry and the backlog. Never publish from paho's thread: its callbacks run under
paho's lock, which ``publish`` takes too.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import structlog

from bridge.metrics import Metrics
from bridge.mqtt.link import MqttLink, publish_packet_size
from bridge.outbox import DropReason, Entry, Outbox, OutboxLimits
from bridge.spool import Spool

_log = structlog.get_logger("bridge.courier")

DEFAULT_WINDOW: Final = 16  # per connection; bounds the burst paho re-sends after a reconnect
_TICK: Final = 0.25
_REPLAYED: Final = ("replayed", "true")


@dataclass(frozen=True, slots=True)
class CourierOptions:
    limits: OutboxLimits = field(default_factory=OutboxLimits)
    window: int = DEFAULT_WINDOW
    qos: int = 1
    max_packet_size: int = 0  # 0: whatever the broker announces (MQTT v5 CONNACK)
    drain_timeout: float = 1.0  # a detaching reader waits this long for its acks


class Courier:
    """Every reader's outbox and the pump that empties them."""

    def __init__(
        self,
        options: CourierOptions,
        *,
        metrics: Metrics,
        spool: Spool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self._metrics = metrics
        self._spool = spool if spool is not None and spool.ok else None
        self._clock = clock
        self._outboxes: dict[str, Outbox] = {}
        self._carriers: dict[str, MqttLink] = {}  # serial -> attached reader link
        self._sending: dict[str, MqttLink] = {}  # serial -> link holding its in-flight entries
        self._in_flight: dict[tuple[int, int], tuple[Outbox, Entry]] = {}
        self._link_load: dict[int, int] = {}
        self._fallback: MqttLink | None = None
        self._acks: deque[tuple[int, int, str | None]] = deque()
        self._taken_back: deque[MqttLink] = deque()
        self._waiting_hint = False  # some outbox has entries not yet handed to MQTT
        self._gauges_at = 0.0
        self._send_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.heartbeat = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._spool is not None:
            self._load_spool(self._spool)
        self._thread = threading.Thread(target=self._pump_loop, name="outbox-pump", daemon=True)
        self._thread.start()

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` for every outbox to empty; how many messages remain."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = sum(len(box) for box in list(self._outboxes.values()))
            if remaining == 0 or time.monotonic() >= deadline:
                return remaining
            self._wake.set()
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)

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

    # -- carriers -----------------------------------------------------------------------------

    def set_fallback(self, link: MqttLink | None) -> None:
        """The bridge's own session: carries messages of readers that are not attached."""
        with self._send_lock:
            self._fallback = link
        self._wake.set()

    def attach(self, serial: str, link: MqttLink) -> None:
        with self._send_lock:
            self._carriers[serial] = link
            self._outbox(serial)
        self._wake.set()

    def detach(self, serial: str, link: MqttLink) -> None:
        """The reader's session is ending: give its in-flight acks a moment, then take back
        what is still unacknowledged (it will be re-sent, marked replayed, by another carrier)."""
        outbox = self._outboxes.get(serial)
        deadline = time.monotonic() + self.options.drain_timeout
        while (outbox is not None and outbox.in_flight and self._sending.get(serial) is link
               and link.connected.is_set() and time.monotonic() < deadline):
            self._wake.set()
            time.sleep(0.01)
        with self._send_lock:
            self._process_acks()
            if self._carriers.get(serial) is link:
                del self._carriers[serial]
            self._release(serial, link)
        self._wake.set()

    def _release(self, serial: str, link: MqttLink) -> None:
        if self._sending.get(serial) is not link:
            return
        del self._sending[serial]
        key_link = link.token
        for key in [k for k, (box, _) in self._in_flight.items()
                    if k[0] == key_link and box.serial == serial]:
            del self._in_flight[key]
            self._link_load[key_link] -= 1
        outbox = self._outboxes.get(serial)
        if outbox is not None:
            returned = outbox.return_in_flight()
            if returned:
                _log.info("outbox_in_flight_returned", serial=serial, count=returned)

    def _carrier(self, serial: str) -> MqttLink | None:
        reader = self._carriers.get(serial)
        fallback = self._fallback
        # A reader session that cannot get through (refused, ACL) must not hold its messages
        # hostage while the bridge's own session is up.
        if reader is not None and (reader.ready.is_set() or fallback is None
                                   or not fallback.ready.is_set()):
            return reader
        return fallback

    # -- readers' side ------------------------------------------------------------------------

    def enqueue(
        self, serial: str, topic: str, payload: bytes, user_properties: tuple[tuple[str, str], ...]
    ) -> None:
        """Accept one device message; it is sent now if the window allows, else it waits."""
        entry = Entry(serial=serial, topic=topic, payload=payload,
                      user_properties=user_properties, created=self._clock())
        with self._send_lock:
            self._process_acks()
            outbox = self._outbox(serial)
            carrier = self._carrier(serial)
            if carrier is None or not carrier.ready.is_set():
                entry.replayed = True
            else:
                entry.origin = (carrier.token, carrier.generation)
            outbox.put(entry)
            self._fill(outbox)
            if outbox.waiting():
                self._waiting_hint = True
                if self._acks:  # acks that came before the hint was up woke nobody
                    self._wake.set()

    def queued(self, serial: str) -> int:
        outbox = self._outboxes.get(serial)
        return 0 if outbox is None else len(outbox)

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

    # -- links' side (paho's thread: record and wake, nothing else) ---------------------------

    def published(self, link: MqttLink, mid: int, failure: str | None) -> None:
        self._acks.append((link.token, mid, failure))
        # The next enqueue handles acks itself; wake the pump only if something waits for the
        # window to open (waking it per ack cost a thread switch per message).
        if self._waiting_hint or failure is not None:
            self._wake.set()

    def link_ready(self, link: MqttLink) -> None:
        self._wake.set()

    def taken_back(self, link: MqttLink) -> None:
        """``link`` reconnected and took its in-flight messages back from paho."""
        self._taken_back.append(link)
        self._wake.set()

    # -- the pump -----------------------------------------------------------------------------

    def _pump_loop(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            self._wake.wait(_TICK)
            self._wake.clear()
            try:
                self.pump_once()
            except Exception:  # a bug here must not stop every reader's delivery
                _log.exception("outbox_pump_failed")

    def pump_once(self) -> None:
        """One turn of the pump: acks, expiry, then fill every window (tests call it)."""
        with self._send_lock:
            self._process_acks()
            waiting = False
            for outbox in list(self._outboxes.values()):
                outbox.expire()
                self._fill(outbox)
                waiting = waiting or outbox.waiting() > 0
            self._waiting_hint = waiting
        now = time.monotonic()
        if now - self._gauges_at >= _TICK:
            self._gauges_at = now
            self._update_gauges()

    def _process_acks(self) -> None:
        self._process_acks_only()
        # After the acks that came before it: what a reconnect took back goes out again.
        while self._taken_back:
            link = self._taken_back.popleft()
            for serial, holder in list(self._sending.items()):
                if holder is link:
                    self._release(serial, link)

    def _process_acks_only(self) -> None:
        delivered: dict[str, tuple[Outbox, list[Entry]]] = {}
        while self._acks:
            link_id, mid, failure = self._acks.popleft()
            found = self._in_flight.pop((link_id, mid), None)
            if found is None:
                continue  # a status/response publish, or already taken back
            outbox, entry = found
            self._link_load[link_id] -= 1
            if failure is not None:
                _log.error("outbox_message_refused", serial=entry.serial, reason=failure)
                outbox.complete(entry, dropped=DropReason.REFUSED)
            else:
                delivered.setdefault(outbox.serial, (outbox, []))[1].append(entry)
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
        limit = self.options.max_packet_size
        if carrier.max_packet_size:
            limit = min(limit, carrier.max_packet_size) if limit else carrier.max_packet_size
        while self._link_load.get(link_id, 0) < self.options.window:
            entry = outbox.next_to_send()
            if entry is None:
                return
            now = self._clock()
            live = entry.origin == (link_id, carrier.generation) and not entry.replayed
            properties = entry.user_properties if live else (*entry.user_properties, _REPLAYED)
            expiry = entry.expiry_interval(outbox.limits.ttl, now) if carrier.v5 else None
            size = publish_packet_size(entry.topic, entry.payload, properties if carrier.v5
                                       else (), qos=self.options.qos, expiry=expiry)
            if limit and size > limit:
                _log.error("outbox_message_oversize", serial=entry.serial, size=size,
                           limit=limit)
                outbox.complete(entry, dropped=DropReason.OVERSIZE)
                continue
            entry.replayed = not live
            try:
                mid = carrier.publish(entry.topic, entry.payload, qos=self.options.qos,
                                      user_properties=properties, expiry_interval=expiry,
                                      tracked=True)
            except Exception:  # never leave an entry marked in flight that nobody owns
                _log.exception("outbox_publish_failed", serial=entry.serial)
                mid = None
            if mid is None:
                outbox.complete(entry, dropped=DropReason.REFUSED)
                continue
            if self.options.qos == 0:
                outbox.complete(entry)
                continue
            self._in_flight[(link_id, mid)] = (outbox, entry)
            self._link_load[link_id] = self._link_load.get(link_id, 0) + 1
            self._sending[outbox.serial] = carrier

    def _update_gauges(self) -> None:
        total = 0
        for serial, outbox in list(self._outboxes.items()):
            count = len(outbox)
            total += outbox.bytes
            self._metrics.outbox_messages.labels(serial).set(count)
        self._metrics.outbox_bytes.set(total)


__all__ = ["DEFAULT_WINDOW", "Courier", "CourierOptions"]
