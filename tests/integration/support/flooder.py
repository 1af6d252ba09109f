"""A command flood from its own process: ``python -m tests.integration.support.flooder
HOST PORT TOPIC RATE SECONDS [QOS]`` publishes garbage commands at RATE a second for SECONDS
(paced every 10 ms), then prints how many it published. Bounded in time by construction."""

from __future__ import annotations

import sys
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

# Not hex, hex that is not MMS, an MMS response (not a request), oversize-ish hex.
PAYLOADS = (b"ZZ not a command", b"0102030405060708", b"AA00820401B5D101", b"F" * 300,
            b"SENDCOMMAND,XYZ")


def main(argv: list[str]) -> int:
    host, port, topic, rate, seconds = argv[0], int(argv[1]), argv[2], float(argv[3]), \
        float(argv[4])
    qos = int(argv[5]) if len(argv) > 5 else 0
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"flooder-{time.time_ns()}",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        due = int((now - start) * rate)
        while sent < due:
            client.publish(topic, PAYLOADS[sent % len(PAYLOADS)], qos=qos)
            sent += 1
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
