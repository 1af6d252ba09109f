"""What MagTek's own MQTT consumer sees, with its default settings, through a real broker:
device lists that show only readers, no ghost readers, and every demo flow of the simulated
reader (insert, swipe, tap, cancel during the wait, timeout) end to end."""

from __future__ import annotations

import json

import pytest
from paho.mqtt.client import topic_matches_sub

from bridge.cli import main
from bridge.mms import Message, MessageType, commands, parse_message
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import running_bridge, wait_until

pytestmark = pytest.mark.integration

SERIAL = "B123456"
MAGTEK_PREFIX = "MagTek/US/CA/SealBeach/Name/"
# Seed 004's demo commands: contact only, MSR only, contactless only.
START_CONTACT = ("AA008104010010018430100182013CA30981010082010183010084020003861A9C01009F020600"
                 "00000001009F03060000000000005F2A020840")
START_MSR = ("AA008104010010018430100182013CA30981010182010083010084020003861A9C01009F02060000"
             "000001009F03060000000000005F2A020840")
START_CONTACTLESS = ("AA008104010010018430100182013CA30981010082010083010184020003861A9C01009F02"
                     "060000000001009F03060000000000005F2A020840")


def _retained_until_marker(probe_factory, broker, pattern: str) -> list:
    """Every retained message under ``pattern`` right now: what a new subscriber gets before
    a marker published after its subscription."""
    probe = probe_factory(pattern, broker=broker)
    marker = pattern.replace("#", "").rstrip("/") + "/ZZMarker"
    probe.publish(marker, b"m")
    seen = []
    probe.wait_for(lambda m: seen.append(m) is None and m.topic == marker, timeout=10)
    return [m for m in seen if m.topic != marker]


@pytest.mark.parametrize(
    ("prefix", "wildcards"),
    [
        ("MagTek/Device/", ["MagTek/+/+/Status", "MagTek/Device/+/+/Status", "+/+/Status"]),
        (MAGTEK_PREFIX, ["MagTek/US/+/+/+/+/+/Status", "MagTek/+/+/Status"]),
    ],
)
def test_device_list_wildcards_list_only_readers(broker, probe_factory, prefix, wildcards):
    bus = SimulatedBus(count=2, serials=[SERIAL, "B654321"], auto_present=None)
    with running_bridge(broker, bus=bus, topics={"prefix": prefix}) as (app, _):
        roots = [f"{prefix}DynaFlexII/{SERIAL}", f"{prefix}DynaFlexII/B654321"]
        assert wait_until(lambda: app.supervisor.connected_roots() == sorted(roots), 10)
        probe = probe_factory("MagTek/Bridge/+/State",
                              *(f"{root}/{leaf}" for root in roots for leaf in ("Status", "Info")))
        probe.expect_retained("MagTek/Bridge/testhost/State", b"online", timeout=10)
        # A root is listed once its session exists; its retained Status and Info (the births)
        # follow its own CONNACK.
        for root in roots:
            probe.expect_retained(f"{root}/Status", b"connected", timeout=10)
            probe.wait_for(f"{root}/Info", timeout=10)
        retained = _retained_until_marker(probe_factory, broker, "#")
        topics = {m.topic for m in retained if m.payload}
        assert "MagTek/Bridge/testhost/State" in topics
        assert "MagTek/Bridge/testhost/BridgeInfo" in topics
        # No bridge topic ends like a reader's: no "+/+/Status" or "+/+/Info" at any depth.
        readers = {f"{root}/{leaf}" for root in roots for leaf in ("Status", "Info")}
        assert {t for t in topics if t.rsplit("/", 1)[-1] in ("Status", "Info")} == readers
        for wildcard in wildcards:
            listed = {t for t in topics if topic_matches_sub(wildcard, t)}
            want = {f"{root}/Status" for root in roots
                    if topic_matches_sub(wildcard, f"{root}/Status")}
            assert listed == want, wildcard
        # MagTek's demo wildcard at its own prefix lists both readers.
        if prefix == MAGTEK_PREFIX:
            assert len({t for t in topics if topic_matches_sub(wildcards[0], t)}) == 2


def _decoded(message) -> Message:
    return parse_message(bytes.fromhex(message.payload.decode()))


def _flow_until(probe, topic: str, notification_id: int, detail: str,
                timeout: float = 10.0) -> list[Message]:
    seen: list[Message] = []

    def done(message) -> bool:
        if message.topic != topic:
            return False
        seen.append(_decoded(message))
        last = seen[-1]
        return (last.message_type == MessageType.DEVICE_NOTIFICATION
                and last.command_id == notification_id
                and (last.notification_detail or b"").hex().upper() == detail)

    probe.wait_for(done, timeout=timeout)
    return seen


def _notifications(messages: list[Message]) -> list[tuple[int, str]]:
    return [(m.command_id, (m.notification_detail or b"").hex().upper()) for m in messages
            if m.message_type == MessageType.DEVICE_NOTIFICATION and m.command_id != 0x1803]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (START_CONTACT, [(0x0101, "10010200"), (0x0101, "10080202"), (0x0105, "10020700"),
                         (0x0101, "10080302"), (0x0101, "10010300")]),
        (START_MSR, [(0x0101, "08010100"), (0x0101, "08080202"), (0x0105, "08020700"),
                     (0x0101, "08080302")]),
        (START_CONTACTLESS, [(0x0101, "20010400"), (0x0101, "20080202"), (0x0105, "20020700"),
                             (0x0101, "20080302")]),
    ],
    ids=["insert", "swipe", "tap"],
)
def test_demo_flows_end_to_end(broker, probe_factory, start, expected):
    root = f"MagTek/Device/DynaFlexII/{SERIAL}"
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present="tap", present_delay=0)
    with running_bridge(broker, bus=bus):
        probe = probe_factory(f"{root}/MMSMessage", f"{root}/Status")
        probe.expect_retained(f"{root}/Status", b"connected", timeout=10)
        probe.publish(f"{root}/SendCommand", start.encode())
        seen = _flow_until(probe, f"{root}/MMSMessage", *expected[-1])
        assert seen[0].message_type == MessageType.DEVICE_RESPONSE
        assert seen[0].status is not None and seen[0].status.summary == 0x01
        assert _notifications(seen) == expected


def test_cancel_during_the_wait_and_the_command_timeout(broker, probe_factory):
    root = f"MagTek/Device/DynaFlexII/{SERIAL}"
    # A person who never presents a card (well, not within 60 s).
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present="tap", present_delay=60)
    with running_bridge(broker, bus=bus):
        probe = probe_factory(f"{root}/MMSMessage", f"{root}/Status")
        probe.expect_retained(f"{root}/Status", b"connected", timeout=10)
        probe.publish(f"{root}/SendCommand", START_CONTACTLESS.encode())
        _flow_until(probe, f"{root}/MMSMessage", 0x1803, "02010200")  # waiting for a card
        probe.publish(f"{root}/SendCommand", commands.cancel_transaction(0x13).hex().encode())
        seen = _flow_until(probe, f"{root}/MMSMessage", 0x0105, "00030100")
        response = seen[0]
        assert (response.ref, response.command_id, response.status.summary) == (0x13, 0x1008, 0)
        assert _notifications(seen) == [(0x0105, "00030100")]

        timed = commands.start_transaction(0x21, timeout_s=1)
        probe.publish(f"{root}/SendCommand", timed.hex().encode())
        seen = _flow_until(probe, f"{root}/MMSMessage", 0x0105, "00010000", timeout=15)
        assert _notifications(seen) == [(0x0105, "00010000")]  # no card, timed out


def test_manual_mode_cards_from_the_simulator_topic_and_the_present_command(
        broker, probe_factory):
    root = f"MagTek/Device/DynaFlexII/{SERIAL}"
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    with running_bridge(broker, bus=bus):
        probe = probe_factory(f"{root}/MMSMessage", f"{root}/Status")
        probe.expect_retained(f"{root}/Status", b"connected", timeout=10)
        probe.publish(f"{root}/SendCommand", START_CONTACT.encode())
        _flow_until(probe, f"{root}/MMSMessage", 0x1803, "02010200")
        probe.publish(f"{root}/Simulator/Present", b"swipe")  # not allowed: nothing happens
        probe.publish(f"{root}/Simulator/Present", b"insert")
        seen = _flow_until(probe, f"{root}/MMSMessage", 0x0101, "10080302")
        assert _notifications(seen)[0] == (0x0101, "10010200")
        assert main(["present", "--host", broker.host, "--port", str(broker.port),
                     root, "remove"]) == 0
        seen = _flow_until(probe, f"{root}/MMSMessage", 0x0101, "10010300")
        assert _notifications(seen) == [(0x0101, "10010300")]


def _ghost_free(probe_factory, broker, root: str) -> bool:
    stored = _retained_until_marker(probe_factory, broker, f"{root}/#")
    return not [m for m in stored if m.payload and m.retain]


@pytest.mark.parametrize("state_directory", [False, True], ids=["retained-info", "state-dir"])
def test_a_root_no_longer_served_is_cleared_at_start(broker, probe_factory, tmp_path,
                                                      monkeypatch, state_directory):
    if state_directory:
        monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    old_root = f"MagTek/Device/DynaFlexII/{SERIAL}"
    new_root = f"MagTek/Device/DynaFlexII/Lane1-{SERIAL}"
    with running_bridge(broker, bus=SimulatedBus(count=1, serials=[SERIAL], auto_present=None)):
        probe = probe_factory(f"{old_root}/Info")
        probe.wait_for(f"{old_root}/Info", timeout=10)
    assert not _ghost_free(probe_factory, broker, old_root)  # Status/Info stay retained
    watcher = probe_factory(f"{old_root}/Status")
    watcher.expect_retained(f"{old_root}/Status", b"disconnected", timeout=5)
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    friendly = {"friendly_names": {SERIAL: "Lane 1"}}
    with running_bridge(broker, bus=bus, topics=friendly) as (app, _):
        watcher.wait_for(lambda m: m.topic == f"{old_root}/Status" and m.payload == b"",
                         timeout=10)
        # Pages already open last hear "disconnected" (MagTek's list hides it); not stored.
        last = watcher.wait_for(f"{old_root}/Status", timeout=10)
        assert (last.payload, last.retain) == (b"disconnected", False)
        assert _ghost_free(probe_factory, broker, old_root)
        assert wait_until(lambda: app.supervisor.connected_roots() == [new_root], 10)
        info = probe_factory("MagTek/Bridge/testhost/BridgeInfo")
        info.wait_for(lambda m: m.topic.endswith("/BridgeInfo") and json.loads(
            m.payload).get("served_roots") == [
                {"serial": SERIAL, "model": "DynaFlexII", "root": new_root}], timeout=10)
    if state_directory:
        stored = json.loads((tmp_path / "served-roots.json").read_text())
        assert stored == [{"serial": SERIAL, "model": "DynaFlexII", "root": new_root}]


def test_clear_root_command(broker, probe_factory):
    ghost = "MagTek/Device/DynaFlexII/BDEAD00"
    live = "MagTek/Device/DynaFlexII/BA11VE0"
    setup = probe_factory()
    setup.publish(f"{ghost}/Status", b"disconnected", retain=True)
    setup.publish(f"{ghost}/Info", b"{}", retain=True)
    setup.publish(f"{live}/Status", b"connected", retain=True)
    broker_args = ["--host", broker.host, "--port", str(broker.port)]
    assert main(["clear-root", *broker_args, ghost]) == 0
    assert _ghost_free(probe_factory, broker, ghost)
    assert main(["clear-root", *broker_args, live]) == 4  # says connected: refused
    assert not _ghost_free(probe_factory, broker, live)
    assert main(["clear-root", *broker_args, "--force", live]) == 0
    assert _ghost_free(probe_factory, broker, live)
