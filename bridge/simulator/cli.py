"""``magtek-bridge present``: ask a running bridge's simulated reader for a card action."""

from __future__ import annotations

import secrets
from typing import Final

from bridge import client
from bridge.mqtt.link import LinkOptions, MqttLink, Publication
from bridge.simulator.control import present_topic

_CONNECT_TIMEOUT: Final = 10.0


def present(options: LinkOptions, prefix: str, root: str, action: str) -> int:
    """Publish ``action`` to ``<root>/Simulator/Present`` (QoS 1); 0 once the broker has it.

    The bridge logs what the reader did (``simulator_action``); a root that is not one of its
    simulated readers is refused there, never passed to a real reader.
    """
    topic = present_topic(client.resolve_root(options, prefix, root))
    link = MqttLink(options, client_id=f"magtek-bridge-present-{secrets.token_hex(3)}",
                    name="present")
    link.start()
    if not link.wait_ready(_CONNECT_TIMEOUT):
        link.stop()
        raise TimeoutError(link.last_error or "no answer from the broker")
    link.stop(final=[Publication(topic, action.encode(), qos=1)])  # waits for the broker
    print(f"{action} -> {topic}")
    return 0


__all__ = ["present"]
