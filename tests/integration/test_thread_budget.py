"""Threads: one per reader plus a small constant (issue 18).

A bridge with N simulated readers, connected to a real broker, having answered a command on
every reader, runs exactly: one ``hid-read[<path>]`` per reader, the I/O loop (``mqtt-io``),
the hot-plug scan (``reader-scan``) and one ``hid-write`` for every reader's writes. The
connector (``mqtt-connect``) lives only while connections are being made.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from bridge.mms import MessageType, commands, parse_message
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import running_bridge, wait_until

pytestmark = pytest.mark.integration

SERIALS = ["B123456", "B654321", "B111111", "B222222"]
CONSTANT = Counter({"mqtt-io": 1, "reader-scan": 1, "hid-write": 1})


@pytest.mark.parametrize("count", [1, 4])
def test_threads_are_one_per_reader_plus_a_constant(broker, probe_factory, count):
    serials = SERIALS[:count]
    roots = [f"MagTek/Device/DynaFlexII/{serial}" for serial in serials]
    probe = probe_factory(*(f"{root}/#" for root in roots))
    before = set(threading.enumerate())
    with running_bridge(broker, bus=SimulatedBus(count=count, serials=serials,
                                                 auto_present=None)):
        for root in roots:
            probe.expect_retained(f"{root}/Status", b"connected", timeout=15)
        for index, root in enumerate(roots):
            probe.publish(f"{root}/SendCommand",
                          commands.get_serial_number(0x70 + index).hex().encode())

            def answered(message, root=root, ref=0x70 + index):
                if message.topic != f"{root}/MMSMessage":
                    return False
                parsed = parse_message(bytes.fromhex(message.payload.decode()))
                return parsed.message_type == MessageType.DEVICE_RESPONSE and parsed.ref == ref

            probe.wait_for(answered, timeout=10)

        def bridge_threads() -> Counter[str]:
            return Counter(t.name for t in threading.enumerate()
                           if t not in before and t.is_alive())

        expected = CONSTANT + Counter(f"hid-read[sim:{index}]" for index in range(count))
        # The connector leaves once every connection is made.
        assert wait_until(lambda: bridge_threads() == expected, 10), bridge_threads()
        assert sum(bridge_threads().values()) == count + sum(CONSTANT.values())
