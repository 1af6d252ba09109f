"""The uhid event layouts, byte for byte (include/uapi/linux/uhid.h), without a kernel, and
the virtual reader's relay logic over a socket pair standing in for /dev/uhid."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from bridge.mms import MessageReceived, Reassembler, packetize
from bridge.mms.commands import get_serial_number
from bridge.simulator import SimulatedReader
from bridge.simulator.uhid import (
    EVENT_SIZE,
    REPORT_DESCRIPTOR,
    UHID_CLOSE,
    UHID_GET_REPORT,
    UHID_OPEN,
    UHID_OUTPUT,
    UHID_SET_REPORT,
    UHID_START,
    VirtualReader,
    decode_event,
    encode_create2,
    encode_destroy,
    encode_get_report_reply,
    encode_input2,
    encode_set_report_reply,
)


def u16(value: int) -> bytes:
    return value.to_bytes(2, sys.byteorder)


def u32(value: int) -> bytes:
    return value.to_bytes(4, sys.byteorder)


def test_event_size_is_the_kernels():
    # u32 type + the largest union member, uhid_create2_req: 128+64+64+2+2+4*4+4096.
    assert EVENT_SIZE == 4 + 128 + 64 + 64 + 2 + 2 + 4 * 4 + 4096 == 4376


def test_create2_layout():
    event = encode_create2(name="DynaFlex II Go", phys="sim/B123456", uniq="B123456",
                           vendor=0x0801, product=0x2024)
    assert len(event) == EVENT_SIZE
    assert event[0:4] == u32(11)  # UHID_CREATE2
    assert event[4:132] == b"DynaFlex II Go".ljust(128, b"\0")
    assert event[132:196] == b"sim/B123456".ljust(64, b"\0")
    assert event[196:260] == b"B123456".ljust(64, b"\0")
    assert event[260:262] == u16(len(REPORT_DESCRIPTOR))
    assert event[262:264] == u16(3)  # BUS_USB
    assert event[264:268] == u32(0x0801)
    assert event[268:272] == u32(0x2024)
    assert event[272:276] == u32(0x0100)  # version
    assert event[276:280] == u32(0)  # country
    assert event[280:280 + len(REPORT_DESCRIPTOR)] == REPORT_DESCRIPTOR
    assert event[280 + len(REPORT_DESCRIPTOR):] == bytes(4096 - len(REPORT_DESCRIPTOR))


def test_create2_refuses_names_that_do_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        encode_create2(name="x" * 128, phys="", uniq="", vendor=1, product=2)


def test_input2_destroy_and_replies_layout():
    report = bytes(range(64))
    event = encode_input2(report)
    assert len(event) == EVENT_SIZE
    assert event[:4] == u32(12) and event[4:6] == u16(64) and event[6:70] == report
    assert event[70:] == bytes(EVENT_SIZE - 70)
    assert encode_destroy() == u32(1) + bytes(EVENT_SIZE - 4)
    reply = encode_get_report_reply(0x01020304, 5)
    assert reply[:12] == u32(10) + u32(0x01020304) + u16(5) + u16(0)
    assert encode_set_report_reply(7, 5)[:10] == u32(14) + u32(7) + u16(5)


def test_decode_output_keeps_the_report_id_byte_and_size():
    data = b"\x00" + bytes(range(1, 65))
    raw = u32(UHID_OUTPUT) + data.ljust(4096, b"\xee") + u16(65) + bytes([1])
    event = decode_event(raw)
    assert (event.type, event.data, event.report_type) == (UHID_OUTPUT, data, 1)


def test_decode_get_set_report_and_start():
    get = decode_event(u32(UHID_GET_REPORT) + u32(42) + bytes([3, 0]))
    assert (get.type, get.request_id, get.report_number, get.report_type) == (
        UHID_GET_REPORT, 42, 3, 0)
    setr = decode_event(u32(UHID_SET_REPORT) + u32(9) + bytes([0, 1]) + u16(3) + b"abc")
    assert (setr.request_id, setr.report_type, setr.data) == (9, 1, b"abc")
    start = decode_event(u32(UHID_START) + (5).to_bytes(8, sys.byteorder))
    assert start.dev_flags == 5
    with pytest.raises(ValueError):
        decode_event(b"\x01")


def test_report_descriptor_is_vendor_page_64_bytes_each_way_no_report_ids():
    items = []
    i = 0
    while i < len(REPORT_DESCRIPTOR):
        prefix = REPORT_DESCRIPTOR[i]
        size = (0, 1, 2, 4)[prefix & 0x03]
        items.append((prefix & 0xFC, int.from_bytes(REPORT_DESCRIPTOR[i + 1:i + 1 + size],
                                                    "little")))
        i += 1 + size
    assert (0x04, 0xFF00) in items  # Usage Page (vendor)
    assert all(tag != 0x84 for tag, _ in items)  # no Report ID item
    sizes = [v for t, v in items if t == 0x74]
    counts = [v for t, v in items if t == 0x94]
    assert sizes == [8] and counts == [64, 64]
    assert [t for t, _ in items if t in (0x80, 0x90)] == [0x80, 0x90]  # Input, Output


def _read_event(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    return sock.recv(EVENT_SIZE + 16)


def test_virtual_reader_relays_both_ways():
    host, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    reader = SimulatedReader("B123456", auto_present=None)
    virtual = VirtualReader(reader, product_id=0x2020, fd=os.dup(device.fileno()))
    device.close()
    try:
        virtual.create()
        created = _read_event(host)
        assert created[:4] == u32(11) and created[4:15] == b"DynaFlex II"
        host.send(u32(UHID_OPEN).ljust(EVENT_SIZE, b"\0"))
        request = get_serial_number(0xB5)
        for report in packetize(request, 64):  # as hidraw passes it on: report id 0 first
            host.send(u32(UHID_OUTPUT) + (b"\x00" + report).ljust(4096, b"\0") + u16(65)
                      + bytes([1]))
        answer = _read_event(host)
        assert answer[:4] == u32(12) and answer[4:6] == u16(64)
        events = Reassembler(report_len=64).feed(answer[6:70])
        assert isinstance(events[0], MessageReceived)
        assert events[0].message.hex().upper().endswith("B1234560")
        assert reader.host_messages[-1] == request  # the leading report-id byte was stripped
        host.send(u32(UHID_GET_REPORT).ljust(EVENT_SIZE, b"\0"))
        assert _read_event(host)[:4] == u32(10)
        host.send(u32(UHID_CLOSE).ljust(EVENT_SIZE, b"\0"))
        deadline = time.monotonic() + 5
        while virtual.opened.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not virtual.opened.is_set()
    finally:
        virtual.destroy()
    assert _read_event(host)[:4] == u32(1)  # UHID_DESTROY
    host.close()
