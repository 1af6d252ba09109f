"""The observer: an MQTT subscriber in its own process (never sharing a GIL with a publisher).

``python -m bench.subscriber --port P`` subscribes (QoS 1) to every reader's ``MMSMessage``
and ``Status``, prints ``ready`` once subscribed and ``status <serial> <payload>`` as Status
messages arrive. Each arrival is stamped on receipt and decoded only at the end: when stdin
reads ``stop`` it prints one JSON line: per serial, every marked counter with its one-way latency in
ms (first arrival), the duplicates, and the stray (unmarked or unparsable) message count.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import PREFIX, read_mark


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.subscriber")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    arrivals: list[tuple[str, bytes, int]] = []
    subscribed = threading.Event()
    out_lock = threading.Lock()

    def say(line: str) -> None:  # two threads print: one whole line at a time
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        now = time.monotonic_ns()
        topic = message.topic
        if topic.endswith("/MMSMessage"):
            arrivals.append((topic, message.payload, now))
        elif topic.endswith("/Status"):
            say(f"status {topic.split('/')[3]} {message.payload.decode()}")

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_socket_open = lambda c, u, s: s.setsockopt(socket.IPPROTO_TCP,
                                                         socket.TCP_NODELAY, 1)
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda *a: client.subscribe(
        [(f"{PREFIX}+/+/MMSMessage", 1), (f"{PREFIX}+/+/Status", 1)])
    client.max_inflight_messages_set(0)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    if not subscribed.wait(60):
        say("error subscribing")
        return 1
    say("ready")
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    client.loop_stop()
    client.disconnect()
    readers: dict[str, dict[str, Any]] = {}
    stray = 0
    for topic, payload, received_ns in list(arrivals):
        mark = read_mark(payload)
        if mark is None:
            stray += 1
            continue
        sent_ns, counter = mark
        reader = readers.setdefault(topic.split("/")[3], {"latency": {}, "duplicates": 0})
        if counter in reader["latency"]:
            reader["duplicates"] += 1
        else:
            reader["latency"][counter] = (received_ns - sent_ns) / 1e6
    print(json.dumps({"readers": readers, "stray": stray}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
