"""Fleet pattern (deploy/fleet/): a store broker bridged to a central broker, both real.

The store broker runs the uplink section of deploy/fleet/store-mosquitto.conf as shipped
(rendered with this test's ports and certificates; only restart_timeout is shortened, and
the queue bound where a test says so), plus its queue settings. The central broker speaks
mutual TLS with passwords and loads deploy/fleet/central-acl.example as is. The uplink runs
through a TcpRelay, so a test can cut the store's link while both brokers stay up. The
bridge runs in-process with two simulated readers against the store broker; consumers
connect to central as ``fleet-consumer``.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.app import BridgeApp
from bridge.mms import MessageType, build_notification, commands, parse_message
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import REPO, running_bridge
from tests.integration.support import Broker, BrokerFactory, MqttProbe, Pki, Received, TcpRelay
from tests.integration.support.messages import make_properties

pytestmark = pytest.mark.integration

TEMPLATE = REPO / "deploy" / "fleet" / "store-mosquitto.conf"
CENTRAL_ACL = REPO / "deploy" / "fleet" / "central-acl.example"
STORE = "00001"
OTHER_STORE = "00002"
CONSUMER = "fleet-consumer"
HOST_ID = "lane-pi"
SERIALS = ["B123456", "B654321"]
LOCAL_ROOTS = [f"MagTek/Device/DynaFlexII/{serial}" for serial in SERIALS]
REMOTE = f"stores/{STORE}/"
ROOTS = [REMOTE + root for root in LOCAL_ROOTS]
UPLINK_STATE = f"{REMOTE}Uplink/State"
BRIDGE_ROOT = f"{REMOTE}MagTek/Bridge/{HOST_ID}"
# Global (non-uplink) settings of the template that these tests run as shipped.
QUEUE_SETTINGS = frozenset({"max_queued_messages", "max_queued_bytes", "queue_qos0_messages",
                            "max_inflight_messages"})
# The template reconnects after 5..60 s; the tests wait for 1 s.
FAST_RESTART = {"restart_timeout": "1"}
LINK_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 15.0
RESPONSE_TIMEOUT_S = 5.0
# How long a command sent while the link is cut is given to (wrongly) produce a response.
SILENCE_S = 2.0


def render_store_uplink(*, store_id: str, central_port: int, pki: Pki, password: str,
                        overrides: Mapping[str, str]) -> str:
    """The template's queue settings and uplink section, filled in for this test."""
    text = string.Template(TEMPLATE.read_text()).safe_substitute(
        STORE_ID=store_id, CENTRAL_HOST="localhost", CENTRAL_PORT=str(central_port),
        CENTRAL_CA_FILE=str(pki.ca_file), STORE_CERT_FILE=str(pki.client_cert),
        STORE_KEY_FILE=str(pki.client_key), STORE_PASSWORD=password)
    lines = [line.strip() for line in text.splitlines()]
    settings = [line for line in lines if line and not line.startswith("#")]
    unresolved = [line for line in settings if "${" in line]
    assert not unresolved, f"placeholders left in the template: {unresolved}"
    start = next(i for i, line in enumerate(settings) if line.startswith("connection "))
    chosen = [line for line in settings[:start] if line.split()[0] in QUEUE_SETTINGS]
    chosen += settings[start:]
    keys = {line.split()[0] for line in chosen}
    missing = set(overrides) - keys
    assert not missing, f"the template no longer sets {missing}"
    return "\n".join(f"{line.split()[0]} {overrides[line.split()[0]]}"
                     if line.split()[0] in overrides else line for line in chosen) + "\n"


def mms_hex(message: bytes) -> bytes:
    return message.hex().upper().encode()


def marker(number: int) -> bytes:
    """A device notification told apart by ``number`` (what a reader emits while cut off)."""
    return build_notification(0x1001, number.to_bytes(4, "big"))


@dataclass
class Fleet:
    central: Broker
    relay: TcpRelay
    store: Broker
    app: BridgeApp
    bus: SimulatedBus
    consumer: MqttProbe  # on central, subscribed to stores/00001/# from the start
    local: MqttProbe  # on the store broker, subscribed to MagTek/# and the link state
    passwords: dict[str, str]
    probe: Callable[..., MqttProbe]

    def central_probe(self, *topics: str, user: str = CONSUMER, **options: object) -> MqttProbe:
        return self.probe(*topics, broker=self.central, username=user,
                          password=self.passwords[user], **options)

    def wait_readers_connected(self) -> None:
        for root in ROOTS:
            self.consumer.expect_retained(f"{root}/Status", b"connected", READY_TIMEOUT_S)

    def wait_settled(self) -> None:
        """Until central has the readers' Info and the bridge Info listing both readers,
        the end of the bridge's start-up burst."""
        for root in ROOTS:
            self.consumer.wait_for(f"{root}/Info", READY_TIMEOUT_S)
        self.consumer.wait_for(lambda m: m.topic == f"{BRIDGE_ROOT}/BridgeInfo"
                               and len(json.loads(m.payload)["readers"]) == len(ROOTS),
                               READY_TIMEOUT_S)

    def send_command(self, reader: int, command: bytes, **properties: object) -> None:
        props = make_properties(**properties) if properties else None
        self.consumer.publish(f"{ROOTS[reader]}/SendCommand", mms_hex(command),
                              properties=props)

    def response(self, reader: int, ref: int, timeout: float = RESPONSE_TIMEOUT_S) -> Received:
        """The reader's response with reference ``ref``, as central delivers it."""
        def matches(msg: Received) -> bool:
            if msg.topic != f"{ROOTS[reader]}/MMSMessage":
                return False
            parsed = parse_message(bytes.fromhex(msg.payload.decode()))
            return parsed.message_type == MessageType.DEVICE_RESPONSE and parsed.ref == ref

        return self.consumer.wait_for(matches, timeout)

    def expect_in_order(self, probe: MqttProbe, topic: str, messages: list[bytes],
                        timeout: float = LINK_TIMEOUT_S) -> list[Received]:
        """Each of ``messages`` on ``topic``, in this order (a duplicate of an earlier one
        may come between them; a later one before an earlier one fails the wait)."""
        got = []
        for message in messages:
            want = mms_hex(message)
            got.append(probe.wait_for(lambda m, want=want: m.topic == topic
                                      and m.payload == want, timeout))
        return got


@contextmanager
def fleet(broker_factory: BrokerFactory, probe_factory: Callable[..., MqttProbe], pki: Pki,
          tmp_path: Path, *, overrides: Mapping[str, str] = FAST_RESTART,
          central_persistence: bool = False, consumer_session: int | None = None
          ) -> Iterator[Fleet]:
    passwords = {user: secrets.token_urlsafe(12)
                 for user in (f"store-{STORE}", f"store-{OTHER_STORE}", CONSUMER)}
    central_extra = ""
    if central_persistence:
        database = tmp_path / "central-db"
        database.mkdir()
        central_extra = f"persistence true\npersistence_location {database}/\n"
    central = broker_factory(users=passwords, acl=CENTRAL_ACL.read_text(), tls=pki,
                             require_certificate=True, extra=central_extra)
    with ExitStack() as stack:
        relay = stack.enter_context(TcpRelay(central.host, central.port))
        consumer = probe_factory(f"{REMOTE}#", broker=central, username=CONSUMER,
                                 password=passwords[CONSUMER], session_expiry=consumer_session)
        uplink = render_store_uplink(store_id=STORE, central_port=relay.port, pki=pki,
                                     password=passwords[f"store-{STORE}"],
                                     overrides={**FAST_RESTART, **overrides})
        store = broker_factory(extra=uplink)
        local = probe_factory("MagTek/#", UPLINK_STATE, broker=store)
        bus = SimulatedBus(count=2, serials=SERIALS, auto_present=None)
        app, _ = stack.enter_context(running_bridge(store, bus=bus, topics={"host_id": HOST_ID}))
        yield Fleet(central=central, relay=relay, store=store, app=app, bus=bus,
                    consumer=consumer, local=local, passwords=passwords, probe=probe_factory)


@pytest.fixture
def make_fleet(broker_factory, probe_factory, test_pki, tmp_path):
    def make(**options):
        return fleet(broker_factory, probe_factory, test_pki, tmp_path, **options)
    return make


def test_template_renders_to_the_uplink_we_document(test_pki):
    uplink = render_store_uplink(store_id="00042", central_port=8883, pki=test_pki,
                                 password="pw", overrides={})
    lines = uplink.splitlines()
    assert "topic Device/# out 1 MagTek/ stores/00042/MagTek/" in lines
    assert "topic Bridge/# out 1 MagTek/ stores/00042/MagTek/" in lines
    assert "topic Device/+/+/SendCommand in 0 MagTek/ stores/00042/MagTek/" in lines
    assert {"cleansession false", "bridge_protocol_version mqttv50",
            "remote_username store-00042", "remote_clientid store-00042",
            "notification_topic stores/00042/Uplink/State",
            "queue_qos0_messages false", "max_queued_messages 20000"} <= set(lines)
    # In the file, global settings must come before the first "connection": Mosquitto
    # would read them as part of the bridge otherwise.
    keys = [line.split()[0] for line in TEMPLATE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert max(keys.index(key) for key in QUEUE_SETTINGS) < keys.index("connection")


def test_readers_appear_at_central_and_answer_commands_from_there(make_fleet):
    with make_fleet() as f:
        f.wait_readers_connected()
        f.consumer.expect_retained(UPLINK_STATE, b"1", LINK_TIMEOUT_S)

        # A consumer arriving later gets the stored (retained) copies, remapped.
        late = f.central_probe(f"{REMOTE}MagTek/Device/+/+/Status",
                               f"{REMOTE}MagTek/Device/+/+/Info", f"{BRIDGE_ROOT}/#",
                               UPLINK_STATE)
        for root, local_root in zip(ROOTS, LOCAL_ROOTS, strict=True):
            late.expect_retained(f"{root}/Status", b"connected", stored=True)
            reader_info = json.loads(late.wait_for(f"{root}/Info").payload)
            assert (reader_info["host_id"], reader_info["root"]) == (HOST_ID, local_root)
        late.expect_retained(f"{BRIDGE_ROOT}/State", b"online", stored=True)
        late.expect_retained(UPLINK_STATE, b"1", stored=True)
        info = json.loads(late.wait_for(f"{BRIDGE_ROOT}/BridgeInfo").payload)
        assert info["host_id"] == HOST_ID
        assert sorted(info["readers"]) == sorted(LOCAL_ROOTS)  # store-local names

        # get serial number through central, to the second reader.
        f.send_command(1, commands.get_serial_number(0x42))
        reply = f.response(1, 0x42)
        parsed = parse_message(bytes.fromhex(reply.payload.decode()))
        assert parsed.command_id == 0xD101
        assert commands.parse_serial_number(parsed) == SERIALS[1]
        # The mqttv50 uplink keeps the bridge's user properties.
        user = dict(reply.user_properties)
        assert len(user["boot_id"]) == 16 and int(user["seq"]) >= 1

        # An MQTT 5 request with a response topic under MagTek/Reply/: the reply crosses
        # the Reply/# out mapping with its correlation data.
        f.send_command(0, commands.get_firmware_id(0x33),
                       response_topic=f"MagTek/Reply/{CONSUMER}/1", correlation_data=b"c-1")
        answer = f.consumer.wait_for(f"{REMOTE}MagTek/Reply/{CONSUMER}/1", RESPONSE_TIMEOUT_S)
        assert answer.correlation_data == b"c-1"
        assert parse_message(bytes.fromhex(answer.payload.decode())).ref == 0x33

        # Each command reached its reader once: no echo back down through the uplink.
        serial_command = commands.get_serial_number(0x42)
        assert f.bus.readers[1].host_messages.count(serial_command) == 1
        assert f.bus.readers[0].host_messages.count(serial_command) == 0
        assert f.bus.readers[0].host_messages.count(commands.get_firmware_id(0x33)) == 1


def test_cut_uplink_queues_readings_and_drops_commands(make_fleet):
    with make_fleet() as f:
        f.wait_readers_connected()
        reader = f.bus.readers[0]

        f.relay.cut()
        # Central publishes the uplink's will; the store broker notes the drop locally.
        f.consumer.wait_for(lambda m: m.topic == UPLINK_STATE and m.payload == b"0",
                            LINK_TIMEOUT_S)
        f.local.wait_for(lambda m: m.topic == UPLINK_STATE and m.payload == b"0",
                         LINK_TIMEOUT_S)

        # A command from central while the store is cut off: accepted by central, never
        # delivered (the uplink subscribes at QoS 0, and central queues no QoS 0).
        stale = commands.get_serial_number(0x66)
        f.send_command(0, stale)
        # Meanwhile the readers keep talking; the bridge publishes to the store broker.
        emitted = [marker(n) for n in range(5)]
        for message in emitted:
            reader.emit_message(message)
        f.expect_in_order(f.local, f"{LOCAL_ROOTS[0]}/MMSMessage", emitted)
        f.bus.unplug(1)
        f.local.expect_retained(f"{LOCAL_ROOTS[1]}/Status", b"disconnected", READY_TIMEOUT_S)
        with pytest.raises(AssertionError, match="nothing matched"):
            f.response(0, 0x66, timeout=SILENCE_S)

        f.relay.restore()
        f.consumer.wait_for(lambda m: m.topic == UPLINK_STATE and m.payload == b"1",
                            LINK_TIMEOUT_S)
        # Everything published during the outage arrives, in order, QoS 1.
        got = f.expect_in_order(f.consumer, f"{ROOTS[0]}/MMSMessage", emitted)
        seqs = [int(dict(m.user_properties)["seq"]) for m in got]
        assert seqs == sorted(seqs)
        assert all(m.qos == 1 for m in got)
        f.consumer.wait_for(lambda m: m.topic == f"{ROOTS[1]}/Status"
                            and m.payload == b"disconnected", LINK_TIMEOUT_S)
        late = f.central_probe(f"{ROOTS[1]}/Status")
        late.expect_retained(f"{ROOTS[1]}/Status", b"disconnected", stored=True)

        # A new command works again; the stale one never reached the reader (had central
        # queued it, it would have been delivered, and run, before this one).
        f.send_command(0, commands.get_serial_number(0x67))
        f.response(0, 0x67)
        assert stale not in reader.host_messages
        assert commands.get_serial_number(0x67) in reader.host_messages


def test_central_restart_delivers_what_the_store_queued(make_fleet):
    # Central keeps sessions on disk, the consumer has a persistent session: messages the
    # store flushes before the consumer is back wait for it at central.
    with make_fleet(central_persistence=True, consumer_session=300) as f:
        f.wait_readers_connected()
        connections = f.consumer.connections

        f.central.stop()
        f.local.wait_for(lambda m: m.topic == UPLINK_STATE and m.payload == b"0",
                         LINK_TIMEOUT_S)
        emitted = [marker(n) for n in range(10, 15)]
        for message in emitted:
            f.bus.readers[1].emit_message(message)
        f.expect_in_order(f.local, f"{LOCAL_ROOTS[1]}/MMSMessage", emitted)

        f.central.start()  # same port
        f.consumer.wait_connections(connections + 1)
        got = f.expect_in_order(f.consumer, f"{ROOTS[1]}/MMSMessage", emitted)
        assert [m.payload for m in got] == [mms_hex(m) for m in emitted]
        f.consumer.wait_for(lambda m: m.topic == UPLINK_STATE and m.payload == b"1",
                            LINK_TIMEOUT_S)
        # Commands work again through the restarted central.
        f.send_command(1, commands.get_serial_number(0x21))
        f.response(1, 0x21, timeout=LINK_TIMEOUT_S)


def test_outage_queue_is_bounded_and_keeps_the_oldest(make_fleet):
    bound = 3
    with make_fleet(overrides={"max_queued_messages": str(bound)}) as f:
        f.wait_readers_connected()
        f.wait_settled()
        reader = f.bus.readers[0]
        f.relay.cut()
        f.local.wait_for(lambda m: m.topic == UPLINK_STATE and m.payload == b"0",
                         LINK_TIMEOUT_S)
        emitted = [marker(n) for n in range(20, 26)]
        for message in emitted:
            reader.emit_message(message)
        f.expect_in_order(f.local, f"{LOCAL_ROOTS[0]}/MMSMessage", emitted)

        f.relay.restore()
        topic = f"{ROOTS[0]}/MMSMessage"
        seen = [f.consumer.wait_for(topic, LINK_TIMEOUT_S).payload]
        # The uplink is back: a message emitted now comes after whatever was queued.
        after = mms_hex(marker(99))
        reader.emit_message(marker(99))

        def until_after(message: Received) -> bool:
            if message.topic != topic:
                return False
            if message.payload != after and message.payload not in seen:
                seen.append(message.payload)  # a QoS 1 duplicate counts once
            return message.payload == after

        f.consumer.wait_for(until_after, LINK_TIMEOUT_S)
        # The oldest, in order, at most ``bound`` of them (a message that was in flight
        # when the link dropped is resent from the same queue and takes a place); the
        # newer ones were dropped for good.
        assert 1 <= len(seen) <= bound
        assert seen == [mms_hex(m) for m in emitted[:len(seen)]]
        assert "Outgoing messages are being dropped" in f.store.log_text()


def test_central_acl_confines_each_store_to_its_own_tree(broker_factory, probe_factory,
                                                         test_pki):
    passwords = {user: secrets.token_urlsafe(12)
                 for user in (f"store-{STORE}", f"store-{OTHER_STORE}", CONSUMER)}
    central = broker_factory(users=passwords, acl=CENTRAL_ACL.read_text(), tls=test_pki,
                             require_certificate=True)

    def as_user(user: str, *topics: str) -> MqttProbe:
        return probe_factory(*topics, broker=central, username=user, password=passwords[user])

    other = as_user(f"store-{OTHER_STORE}", "stores/#")
    store = as_user(f"store-{STORE}")
    consumer = as_user(CONSUMER, "stores/#")
    not_authorized = 0x87

    # A store may not publish into another store's tree ...
    assert other.publish(f"{ROOTS[0]}/Status", b"disconnected", check=False) == not_authorized
    # ... nor read it, even with a stores/# subscription.
    store.publish(f"{ROOTS[0]}/MMSMessage", b"AA00")
    other.publish(f"stores/{OTHER_STORE}/MagTek/Device/DynaFlexII/B999999/MMSMessage", b"BB00")
    got = other.wait_for(lambda m: m.payload == b"BB00")
    assert got.topic.startswith(f"stores/{OTHER_STORE}/")
    assert consumer.wait_for(lambda m: m.payload == b"AA00").topic == f"{ROOTS[0]}/MMSMessage"
    assert all(not m.topic.startswith(REMOTE) for m in other.drain())
    # Consumers read everything and may send commands, but may not speak for a store.
    assert consumer.publish(f"{ROOTS[0]}/SendCommand", b"00") == 0
    assert consumer.publish(f"{ROOTS[0]}/Status", b"connected", check=False) == not_authorized
