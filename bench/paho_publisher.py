"""Baseline for the CPU cost at line rate: a bare paho publisher in its own process.

It publishes the same single-report message at the same rate and QoS as the bridge does at
line rate, with the same MQTT v5 user properties (boot_id, seq) and message expiry, set
through paho's own API, and prints the CPU it used as a percentage of one core.
"""

from __future__ import annotations

import argparse
import resource
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.mms import build_notification


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paho_publisher")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    time.sleep(0.5)
    topic = "MagTek/Device/DynaFlexII/B000000/MMSMessage"
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = due = time.perf_counter()
    sent = 0
    while time.perf_counter() - start < args.seconds:
        payload = build_notification(0x1001, sent.to_bytes(4, "big")).hex().upper()
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = [("boot_id", "0123456789abcdef"), ("seq", str(sent))]
        properties.MessageExpiryInterval = 300
        client.publish(topic, payload, qos=1, properties=properties)
        sent += 1
        due += 1.0 / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    after = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = time.perf_counter() - start
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    client.loop_stop()
    client.disconnect()
    print(f"{100 * cpu / elapsed:.2f} {sent / elapsed:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
