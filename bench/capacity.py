"""`python -m bench.capacity`: what a fleet of stores costs a central MQTT broker cluster.

Drives each card flow the simulator supports (tap, insert, swipe) through the protocol code:
a POS ``start_transaction`` command is packetized into HID reports and written to a
``SimulatedReader``, a card is presented, and the reader's reports are reassembled into the
messages the bridge would publish. Every message is sized as the MQTT PUBLISH packet that
reaches the central broker through the store broker's uplink (deploy/fleet/): the topic
remapped to ``stores/<store id>/MagTek/...``, the upper-case hex payload, the packet id,
and with MQTT 5 the ``boot_id``/``seq`` user properties the bridge adds (a Mosquitto
``mqttv50`` bridge forwards them). The fleet load follows from a stated peak rate, an input:
``--lanes`` x ``--sales-per-lane-per-minute`` per store (default 4 x 2).

What crosses the uplink per sale, with deploy/fleet/store-mosquitto.conf: the POS's
``SendCommand`` (the ``Device/#`` out mapping carries store-local commands up too), the
reader's response, its prompt, and the card notifications. Nothing crosses down (the POS is
in the store). Wire estimates add one TLS 1.3 record (22 B) per packet and 52 B of IPv4+TCP
headers per segment (MSS 1448), one segment per packet, no coalescing and no ACK-only
segments: a rough upper figure, not a measurement.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TextIO, get_args

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.mms import (
    Message,
    MessageReceived,
    MessageType,
    Reassembler,
    commands,
    packetize,
    parse_message,
)
from bridge.mqtt.topics import ReaderTopics, reader_root
from bridge.simulator import CardKind, SimulatedReader

FLOWS: Final[tuple[CardKind, ...]] = get_args(CardKind)
SERIAL: Final = "B123456"
MODEL: Final = "DynaFlexII"
DEVICE_PREFIX: Final = "MagTek/Device/"
BOOT_ID: Final = "0123456789abcdef"  # 16 hex characters, as the bridge makes them
SEQ_DIGITS: Final = 6  # a reader some hundred thousand messages into a boot
PUBACK_BYTES: Final = 4  # fixed header 2 + packet id 2 (v5 omits a success reason code)
PING_BYTES: Final = 2  # PINGREQ and PINGRESP each
TLS_RECORD_OVERHEAD: Final = 22  # TLS 1.3 AES-GCM: 5 header + 1 content type + 16 tag
TCP_IP_HEADERS: Final = 52  # IPv4 20 + TCP 20 + timestamps option 12
MSS: Final = 1448


@dataclass(frozen=True, slots=True)
class Publish:
    """One MQTT PUBLISH as it reaches the central broker."""

    label: str
    topic: str
    mms_bytes: int  # the MMS message itself
    payload: int  # the MQTT payload: upper-case hex, two characters per MMS byte
    properties: int  # the v5 property block, its length varint included (0 for 3.1.1)
    size: int  # the whole PUBLISH packet

    @property
    def wire(self) -> int:
        """PUBLISH plus TLS and TCP/IP overhead (the estimate described in the module doc)."""
        return wire_bytes(self.size)


@dataclass(frozen=True, slots=True)
class Sale:
    """Everything one sale puts on the uplink, in order."""

    flow: CardKind
    publishes: tuple[Publish, ...]
    hid_reports: int  # HID reports in both directions at the reader

    @property
    def messages(self) -> int:
        return len(self.publishes)

    @property
    def mqtt_bytes(self) -> int:
        """The PUBLISH packets to central (each is answered by a PUBACK, not counted)."""
        return sum(p.size for p in self.publishes)

    @property
    def wire_bytes(self) -> int:
        return sum(p.wire for p in self.publishes)


@dataclass(frozen=True, slots=True)
class FleetLoad:
    stores: int
    sales_per_second: float
    messages_in: float  # PUBLISH/s from the stores
    mqtt_in: float  # bytes/s of PUBLISH packets from the stores
    wire_in: float  # bytes/s with TLS and TCP/IP
    messages_out: float  # PUBLISH/s delivered to consumers
    mqtt_out: float
    wire_out: float
    connections: int
    retained: int
    pings_per_second: float


def varint_size(value: int) -> int:
    """Bytes of an MQTT variable byte integer (MQTT 5 section 1.5.5)."""
    if not 0 <= value <= 268_435_455:
        raise ValueError(f"{value} does not fit a variable byte integer")
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def user_properties(pairs: Sequence[tuple[str, str]]) -> int:
    """Size of a PUBLISH property block holding ``pairs``, its length varint included."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if pairs:
        props.UserProperty = list(pairs)
    return len(props.pack())  # type: ignore[no-untyped-call]


def publish_size(topic: str, payload: int, *, qos: int = 1, v5: bool = True,
                 properties: int = 1) -> int:
    """Bytes of a PUBLISH packet (MQTT 3.1.1 section 3.3, MQTT 5 section 3.3).

    Args:
        properties: the v5 property block with its length varint (1 for none); ignored
            for 3.1.1.
    """
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + payload
    if v5:
        remaining += properties
    return 1 + varint_size(remaining) + remaining


def wire_bytes(packet: int) -> int:
    """``packet`` in one TLS record, over as many TCP segments as it needs."""
    record = packet + TLS_RECORD_OVERHEAD
    return record + TCP_IP_HEADERS * math.ceil(record / MSS)


def run_sale(flow: CardKind, serial: str = SERIAL) -> tuple[bytes, list[bytes], int]:
    """One sale through a simulated reader: (POS command, device messages, HID reports)."""
    reader = SimulatedReader(serial, auto_present=None)
    command = commands.start_transaction(0x01, amount_cents=1234)
    reports = 0
    for host_report in packetize(command, reader.report_len):
        reader.handle_host_report(host_report)
        reports += 1
    if not reader.present_card(flow):
        raise RuntimeError(f"the simulated reader did not start a transaction for {flow}")
    if flow == "insert":
        reader.remove_card()  # presented by hand, the card stays in the slot until taken out
    reassembler = Reassembler(report_len=reader.report_len)
    messages: list[bytes] = []
    while (report := reader.next_device_report(0.0)) is not None:
        reports += 1
        messages.extend(event.message for event in reassembler.feed(report)
                        if isinstance(event, MessageReceived))
    if reassembler.pending:
        raise RuntimeError("the reader's last message did not reassemble")
    return command, messages, reports


def _label(message: Message) -> str:
    if message.message_type == MessageType.DEVICE_RESPONSE:
        return f"response {message.command_id:04X}"
    detail = (message.notification_detail or b"").hex().upper()
    return f"notification {message.command_id:04X} {detail}".rstrip()


def sale(flow: CardKind, *, store_id: str, v5: bool = True, serial: str = SERIAL) -> Sale:
    """Size everything one sale of ``flow`` sends to central from store ``store_id``."""
    command, messages, reports = run_sale(flow, serial)
    remote = f"stores/{store_id}/"
    topics = ReaderTopics.for_root(reader_root(DEVICE_PREFIX, MODEL, serial))
    props = user_properties([("boot_id", BOOT_ID), ("seq", "9" * SEQ_DIGITS)])
    no_props = user_properties([])
    publishes = [_publish("SendCommand (POS)", remote + topics.send_command, command,
                          v5=v5, properties=no_props)]
    publishes += [_publish(f"MMSMessage {_label(parse_message(data))}",
                           remote + topics.mms_message, data, v5=v5, properties=props)
                  for data in messages]
    return Sale(flow=flow, publishes=tuple(publishes), hid_reports=reports)


def _publish(label: str, topic: str, data: bytes, *, v5: bool, properties: int) -> Publish:
    payload = len(data.hex().upper().encode("ascii"))
    return Publish(label=label, topic=topic, mms_bytes=len(data), payload=payload,
                   properties=properties if v5 else 0,
                   size=publish_size(topic, payload, v5=v5, properties=properties))


def fleet_load(per_sale: Sale, *, stores: int, sales_per_store_minute: float, consumers: int,
               readers_per_store: int, keepalive: int) -> FleetLoad:
    """Peak load on the central cluster: every store at its peak rate at once."""
    rate = stores * sales_per_store_minute / 60.0
    out_share = rate * consumers
    # Retained at central per store: each reader's Status and Info, the bridge's State and
    # BridgeInfo, and the uplink's notification state (payment requests' State come and go
    # with their requests and are not counted).
    retained = stores * (2 * readers_per_store + 3)
    return FleetLoad(
        stores=stores,
        sales_per_second=rate,
        messages_in=rate * per_sale.messages,
        mqtt_in=rate * per_sale.mqtt_bytes,
        wire_in=rate * per_sale.wire_bytes,
        messages_out=out_share * per_sale.messages,
        mqtt_out=out_share * per_sale.mqtt_bytes,
        wire_out=out_share * per_sale.wire_bytes,
        connections=stores + consumers,
        retained=retained,
        pings_per_second=stores / keepalive,
    )


def _mbit(bytes_per_second: float) -> str:
    return f"{bytes_per_second * 8 / 1e6:,.2f}"


def report(args: argparse.Namespace, out: TextIO) -> None:
    v5 = args.protocol == "5"
    sales = {flow: sale(flow, store_id=args.store_id, v5=v5) for flow in FLOWS}
    per_store_minute = args.lanes * args.sales_per_lane_per_minute
    chosen = (max(sales.values(), key=lambda s: s.mqtt_bytes) if args.flow == "worst"
              else sales[args.flow])
    print(f"Assumptions: peak {args.lanes} lanes x {args.sales_per_lane_per_minute:g} sales/lane/"
          f"min = {per_store_minute:g} sales/store/min, every store at peak at once; MQTT "
          f"{args.protocol} uplink (QoS 1); POS at the store; {args.consumers} consuming "
          f"application(s) at central; store id {args.store_id!r} "
          f"({len(args.store_id)} characters); fleet figures use the {chosen.flow} flow"
          f"{' (the heaviest)' if args.flow == 'worst' else ''}.", file=out)
    print(file=out)
    print("Per sale (messages store -> central):", file=out)
    print(file=out)
    print("| flow | messages | HID reports | MMS bytes | payload bytes (hex) | PUBLISH bytes "
          "| mean PUBLISH | wire estimate |", file=out)
    print("|---|---:|---:|---:|---:|---:|---:|---:|", file=out)
    for flow, one in sales.items():
        mms = sum(p.mms_bytes for p in one.publishes)
        payload = sum(p.payload for p in one.publishes)
        mean = sum(p.size for p in one.publishes) / one.messages
        print(f"| {flow} | {one.messages} | {one.hid_reports} | {mms:,} | {payload:,} | "
              f"{one.mqtt_bytes:,} | {mean:,.0f} B | {one.wire_bytes:,} |", file=out)
    print(file=out)
    print(f"Bytes per message, {chosen.flow} flow:", file=out)
    print(file=out)
    print("| message | MMS | payload | topic | v5 properties | PUBLISH |", file=out)
    print("|---|---:|---:|---:|---:|---:|", file=out)
    for p in chosen.publishes:
        print(f"| {p.label} | {p.mms_bytes} | {p.payload} | {len(p.topic)} | {p.properties} | "
              f"{p.size} |", file=out)
    print(file=out)
    print(f"Central cluster at peak ({chosen.flow} flow, {per_store_minute:g} sales/store/min):",
          file=out)
    print(file=out)
    print("| stores | sales/s | PUBLISH/s in | MQTT in (Mbit/s) | wire in est. (Mbit/s) | "
          "PUBLISH/s out | wire out est. (Mbit/s) | connections | retained | idle pings/s |",
          file=out)
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", file=out)
    loads = [fleet_load(chosen, stores=stores, sales_per_store_minute=per_store_minute,
                        consumers=args.consumers, readers_per_store=args.lanes,
                        keepalive=args.keepalive) for stores in args.stores]
    for load in loads:
        print(f"| {load.stores:,} | {load.sales_per_second:,.0f} | {load.messages_in:,.0f} | "
              f"{_mbit(load.mqtt_in)} | {_mbit(load.wire_in)} | {load.messages_out:,.0f} | "
              f"{_mbit(load.wire_out)} | {load.connections:,} | {load.retained:,} | "
              f"{load.pings_per_second:,.0f} |", file=out)
    print(file=out)
    print(f"Each PUBLISH is answered with a {PUBACK_BYTES}-byte PUBACK "
          f"({wire_bytes(PUBACK_BYTES)} B on the wire, estimated), on both hops.", file=out)
    per_minute = per_store_minute * chosen.messages
    mean_held = sum(len(p.topic) + p.payload + p.properties for p in chosen.publishes) / (
        chosen.messages)
    largest = max(loads, key=lambda load: load.stores)
    print(f"Store uplink outage: {per_minute:g} messages/min at peak; max_queued_messages "
          f"{args.max_queued_messages:,} holds {args.max_queued_messages / per_minute:,.0f} min "
          f"of peak traffic (~{args.max_queued_messages * mean_held / 1e6:,.1f} MB of topics "
          f"and payloads in the store broker). After a central restart every store re-sends "
          f"its retained messages: {largest.retained:,} PUBLISH at {largest.stores:,} stores.",
          file=out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lanes", type=int, default=4,
                        help="checkout lanes (one reader each) per store (default 4)")
    parser.add_argument("--sales-per-lane-per-minute", type=float, default=2.0,
                        help="peak sales per lane per minute (default 2)")
    parser.add_argument("--stores", type=int, nargs="+", default=[1_000, 10_000],
                        help="fleet sizes (default 1000 10000)")
    parser.add_argument("--flow", choices=[*FLOWS, "worst"], default="worst",
                        help="card flow for the fleet figures (default: the heaviest)")
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5",
                        help="MQTT version of the uplink (default 5: keeps boot_id/seq)")
    parser.add_argument("--consumers", type=int, default=1,
                        help="applications at central receiving every message (default 1)")
    parser.add_argument("--store-id", default="00042", help="a typical store id")
    parser.add_argument("--keepalive", type=int, default=30,
                        help="uplink keepalive_interval in seconds (default 30)")
    parser.add_argument("--max-queued-messages", type=int, default=20_000,
                        help="store broker max_queued_messages (default 20000)")
    args = parser.parse_args(argv)
    if args.lanes < 1 or args.sales_per_lane_per_minute <= 0 or args.consumers < 0:
        parser.error("lanes and sales per lane must be positive, consumers not negative")
    return args


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    report(parse_args(argv), out if out is not None else sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
