"""TLS and ACLs with the bridge itself: clear reasons for refused handshakes, mutual TLS,
``require_tls``, and an ACL that confines the bridge to its own topic roots."""

from __future__ import annotations

import pytest

from bridge.mms import build_notification, commands
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import REPO, running_bridge, wait_until
from tests.integration.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERIAL = "B123456"
ROOT = f"MagTek/Device/DynaFlexII/{SERIAL}"


def _tls(ca, cert=None, key=None, **extra):
    section = {"enabled": True, "ca_file": str(ca)}
    if cert is not None:
        section.update(cert_file=str(cert), key_file=str(key))
    section.update(extra)
    return section


def _wait_error(app, words: str, timeout: float = 10.0) -> str:
    wait_until(lambda: words in (app.link.last_error or ""), timeout)
    ready, details = app.readiness()
    assert not ready
    reasons = " ".join(details["reasons"])
    assert words in reasons, reasons
    return reasons


def test_mutual_tls_connects_and_relays(mtls_broker, test_pki, probe_factory):
    tls = _tls(test_pki.ca_file, test_pki.client_cert, test_pki.client_key)
    with running_bridge(mtls_broker, mqtt={"tls": tls, "require_tls": True}):
        probe = probe_factory(f"{ROOT}/Status", broker=mtls_broker)
        probe.expect_retained(f"{ROOT}/Status", b"connected", timeout=10)


def test_wrong_ca_is_reported_as_unknown_ca(tls_broker, test_pki):
    with running_bridge(tls_broker, mqtt={"tls": _tls(test_pki.other_ca_file)}) as (app, _):
        reasons = _wait_error(app, "unknown CA")
        assert "mqtt.tls.ca_file" in reasons


def test_hostname_mismatch_is_reported(broker_factory, test_pki):
    # The server certificate names 127.0.0.1 and localhost; a second TLS listener on
    # 127.0.0.2 presents the same certificate under an address it does not carry.
    port = free_port()
    extra = (f"listener {port} 127.0.0.2\ncafile {test_pki.ca_file}\n"
             f"certfile {test_pki.server_cert}\nkeyfile {test_pki.server_key}\n")
    broker = broker_factory(tls=True, extra=extra)
    with running_bridge(broker, mqtt={"host": "127.0.0.2", "port": port,
                                      "tls": _tls(test_pki.ca_file)}) as (app, _):
        _wait_error(app, "does not match the host name")


def test_missing_client_certificate_is_reported(mtls_broker, test_pki):
    with running_bridge(mtls_broker, mqtt={"tls": _tls(test_pki.ca_file)}) as (app, _):
        reasons = _wait_error(app, "TLS:")
        assert "client certificate" in reasons


def test_client_certificate_from_another_ca_is_refused(mtls_broker, test_pki):
    tls = _tls(test_pki.ca_file, test_pki.other_client_cert, test_pki.other_client_key)
    with running_bridge(mtls_broker, mqtt={"tls": tls}) as (app, _):
        reasons = _wait_error(app, "TLS:")
        assert "client certificate" in reasons


def test_require_tls_refuses_a_plain_listener(broker, test_pki):
    tls = _tls(test_pki.ca_file)
    with running_bridge(broker, mqtt={"tls": tls, "require_tls": True}) as (app, _):
        reasons = _wait_error(app, "TLS:")
        assert "plain" in reasons or "closed" in reasons, reasons
        assert not app.link.connected.is_set()


def test_acl_confines_the_bridge_to_its_root(broker_factory, probe_factory):
    users = {"store-7": "s3cret-7", "watcher": "w4tch"}
    acl = (
        "user store-7\n"
        "topic readwrite MagTek/Device/#\n"
        "topic readwrite MagTek/Bridge/#\n"
        "user watcher\n"
        "topic read #\n"
    )
    broker = broker_factory(users=users, acl=acl)
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    # A bridge configured (wrongly) to publish outside its allowed root: every device
    # message is refused with 0x87, counted as refused, and never jams the next ones.
    mqtt = {"username": "store-7", "password": "s3cret-7"}
    with running_bridge(broker, bus=bus, mqtt=mqtt,
                        topics={"prefix": "Elsewhere/Device/"}) as (app, _):
        watcher = probe_factory("#", broker=broker, username="watcher", password="w4tch")
        assert wait_until(lambda: bool(app.supervisor.sessions())
                          and app.supervisor.sessions()[0].link is not None, 10)
        for n in range(3):
            bus.readers[0].emit_message(build_notification(0x1001, n.to_bytes(4, "big")))
        assert wait_until(lambda: (app.metrics.registry.get_sample_value(
            "magtek_bridge_outbox_dropped_total", {"reason": "refused"}) or 0) == 3, 10)
        assert app.courier.queued(SERIAL) == 0
        assert not [m for m in watcher.drain() if m.topic.startswith("Elsewhere/")]


def test_shipped_acl_example_confines_a_bridge_to_its_readers(broker_factory, probe_factory):
    acl = (REPO / "deploy" / "mosquitto" / "magtek.acl").read_text()
    users = {"store-0042-lane-1": "lane-1-pw", "pos-lane-1": "pos-pw"}
    broker = broker_factory(users=users, acl=acl)
    allowed, foreign = "B54E05A", "B123456"
    bus = SimulatedBus(count=2, serials=[allowed, foreign], auto_present=None)
    mqtt = {"username": "store-0042-lane-1", "password": "lane-1-pw"}
    with running_bridge(broker, bus=bus, mqtt=mqtt,
                        topics={"host_id": "store-0042-lane-1"}) as (app, _):
        pos = probe_factory("MagTek/Device/#", "MagTek/Bridge/+/State", broker=broker,
                            username="pos-lane-1", password="pos-pw")
        root = f"MagTek/Device/DynaFlexII/{allowed}"
        pos.expect_retained(f"{root}/Status", b"connected", timeout=10)
        pos.expect_retained("MagTek/Bridge/store-0042-lane-1/State", b"online", timeout=10)
        pos.publish(f"{root}/SendCommand", commands.get_serial_number(0x21).hex().encode())
        pos.wait_for(f"{root}/MMSMessage", timeout=10)
        # The reader the ACL does not list: its messages are refused by the broker.
        assert wait_until(lambda: app.supervisor.session_for_root(
            f"MagTek/Device/DynaFlexII/{foreign}") is not None, 10)
        bus.readers[1].emit_message(build_notification(0x1001, b"\0\0\0\1"))
        assert wait_until(lambda: (app.metrics.registry.get_sample_value(
            "magtek_bridge_outbox_dropped_total", {"reason": "refused"}) or 0) >= 1, 10)
        assert not [m for m in pos.drain() if foreign in m.topic and "MMSMessage" in m.topic]
