"""The integration fixtures themselves: real Mosquitto brokers, the probe, the CLI helpers.

Reason codes are what Mosquitto 2.0.11 sends (MQTT v5 section 2.4): 0x87 NotAuthorized for
a refused CONNECT (it does not use 0x86 BadUserNameOrPassword) and for a QoS 1 PUBLISH the
ACL denies, 0x10 NoMatchingSubscribers when nobody subscribed.
"""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.integration.harness import wait_until
from tests.integration.support import (
    Broker,
    BrokerStartError,
    CliMessage,
    CliSubscriber,
    MqttProbe,
    ProbeConnectError,
    connection_args,
    free_port,
    make_properties,
    mosquitto_pub,
    mosquitto_sub,
    require_tool,
)
from tests.integration.support import broker as broker_module
from tests.integration.support import tools as tools_module

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 0x87
NO_MATCHING_SUBSCRIBERS = 0x10
SUCCESS = 0x00
BINARY = bytes(range(256))


def _refuses_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


# -- plain broker ---------------------------------------------------------------------------


def test_round_trip_keeps_payload_and_v5_properties(broker, probe_factory):
    listener = probe_factory("plain/#")
    sender = probe_factory()
    props = make_properties(user_properties=[("seq", "1"), ("boot_id", "abc")],
                            response_topic="plain/reply", correlation_data=b"\x00corr\xff",
                            content_type="application/octet-stream")

    code = sender.publish("plain/one", BINARY, properties=props)

    got = listener.wait_for("plain/one")
    assert code == SUCCESS
    assert (got.payload, got.qos, got.retain) == (BINARY, 1, False)
    assert got.user_properties == (("seq", "1"), ("boot_id", "abc"))
    assert (got.response_topic, got.correlation_data, got.content_type) == (
        "plain/reply", b"\x00corr\xff", "application/octet-stream")
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert listener.client_id != sender.client_id


def test_retained_message_reaches_a_late_subscriber(probe_factory):
    publisher = probe_factory()
    assert publisher.publish("state/a", b"on", retain=True) == NO_MATCHING_SUBSCRIBERS

    late = probe_factory("state/#")

    got = late.expect_retained("state/a", b"on", stored=True)
    assert got.retain is True


def test_wait_for_reports_what_arrived_instead(probe_factory):
    probe = probe_factory("noise/#")
    probe.publish("noise/a", b"x" * 100)
    probe.wait_for(lambda m: m.topic == "noise/a" and m.retain is False)
    probe.publish("noise/b", b"yz")
    probe.publish("noise/c", b"1")

    with pytest.raises(AssertionError) as failure:
        probe.wait_for("noise/never", timeout=0.5)

    assert "nothing matched noise/never within 0.5 s; got 2:" in str(failure.value)
    assert "noise/b [2 B, retain=False] b'yz'" in str(failure.value)
    # What was passed over is still there for the next wait.
    assert [m.topic for m in probe.drain()] == ["noise/b", "noise/c"]
    assert probe.drain() == []


def test_mosquitto_pub_reaches_the_probe(broker, probe_factory):
    probe = probe_factory("cli/#")

    mosquitto_pub(broker, "cli/in", BINARY)

    got = probe.wait_for("cli/in")
    assert (got.payload, got.qos) == (BINARY, 1)


def test_probe_reaches_mosquitto_sub_live_and_retained(broker, probe_factory):
    probe = probe_factory()
    probe.publish("out/kept", b"stored", retain=True)

    with CliSubscriber(broker, "out/#", count=2) as sub:
        sub.wait_subscribed()
        probe.publish("out/live", b"\x00\x01live")
        messages = sub.messages()

    assert messages == [CliMessage("out/kept", b"stored", retain=True),
                        CliMessage("out/live", b"\x00\x01live", retain=False)]
    assert mosquitto_sub(broker, "out/#") == [CliMessage("out/kept", b"stored", retain=True)]


def test_two_brokers_run_at_once_and_are_separate(mosquitto_factory, probe_factory):
    wanted = free_port()
    first = mosquitto_factory()
    second = mosquitto_factory(port=wanted)
    on_first = probe_factory("#", broker=first)
    on_second = probe_factory("#", broker=second)

    probe_factory(broker=first).publish("where", b"first")
    probe_factory(broker=second).publish("where", b"second")

    assert second.port == wanted
    assert first.port != second.port
    assert on_first.wait_for("where").payload == b"first"
    assert on_second.wait_for("where").payload == b"second"
    assert on_first.drain() == []
    assert on_second.drain() == []


# -- outages ----------------------------------------------------------------------------------


def test_stop_and_start_keep_the_port_and_the_probe_comes_back(broker, probe_factory):
    probe = probe_factory("outage/#")
    port = broker.port

    broker.stop()
    assert not broker.running
    assert _refuses_tcp(port)
    broker.start()

    assert broker.port == port
    probe.wait_connections(2)
    probe_factory().publish("outage/after", b"back")
    assert probe.wait_for("outage/after").payload == b"back"
    assert broker.log_text().count(f"Opening ipv4 listen socket on port {port}.") == 2


def test_restart_is_stop_then_start(broker, probe_factory):
    probe = probe_factory("again/#")
    first_pid = broker.pid

    broker.restart()

    assert broker.running
    assert broker.pid not in (None, first_pid)
    probe.wait_connections(2)
    probe_factory().publish("again/x", b"1")
    probe.wait_for("again/x")


def test_start_failure_carries_mosquittos_own_words(mosquitto_factory):
    with pytest.raises(BrokerStartError) as failure:
        mosquitto_factory(extra="no_such_option 1")

    text = str(failure.value)
    assert "exited with status" in text
    assert "no_such_option 1" in text  # the config
    assert "Unknown configuration variable" in text  # mosquitto's complaint


def test_a_taken_port_is_replaced_on_first_start(mosquitto_factory, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(broker_module, "free_port", lambda: next(ports))

        broker = mosquitto_factory()

        assert broker.port != taken
        assert "Address already in use" in broker.output_text() + broker.log_text()
        # A known port is never changed behind the test's back.
        pinned = mosquitto_factory(start=False, port=taken)
        with pytest.raises(BrokerStartError, match="Address already in use"):
            pinned.start()
        assert pinned.port == taken


@pytest.mark.parametrize(("ci", "says"), [("true", "CI: `mosquitto` is missing"),
                                          (None, "sudo apt-get install mosquitto")])
def test_missing_mosquitto_fails_and_never_skips(tmp_path, monkeypatch, ci, says):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tools_module, "_EXTRA_DIRS", ())
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)

    with pytest.raises(pytest.fail.Exception, match="mosquitto") as failure:
        Broker(tmp_path / "b")
    assert says in str(failure.value)
    with pytest.raises(pytest.fail.Exception):
        require_tool("mosquitto_sub")


# -- password and ACL -------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["wrong password", "unknown user", "anonymous"])
def test_auth_broker_refuses_bad_credentials(auth_broker, who):
    options = {"wrong password": {"username": auth_broker.username, "password": "nope"},
               "unknown user": {"username": "mallory", "password": auth_broker.password},
               "anonymous": {"anonymous": True}}[who]

    with pytest.raises(ProbeConnectError) as failure:
        MqttProbe(auth_broker, **options).connect()

    assert failure.value.reason_code == NOT_AUTHORIZED
    assert failure.value.detail == "Not authorized"


def test_auth_broker_accepts_its_user_in_the_probe_and_the_cli(auth_broker, probe_factory):
    assert auth_broker.username == "bridge-test"
    probe = probe_factory("auth/#", broker=auth_broker)

    mosquitto_pub(auth_broker, "auth/cli", b"ok")
    refused = mosquitto_pub(auth_broker, "auth/cli", b"no", check=False, extra=connection_args(
        auth_broker, tool="pub", username=auth_broker.username, password="nope"))

    assert probe.wait_for("auth/cli").payload == b"ok"
    assert refused.returncode != 0
    assert "Not authorized" in refused.stderr


def test_acl_denies_publishing_outside_the_allowed_topic(mosquitto_factory, probe_factory):
    broker = mosquitto_factory(
        users={"alice": "alice-pw", "watcher": "watcher-pw"},
        acl="user alice\ntopic readwrite allowed/#\n\nuser watcher\ntopic read #\n")
    watcher = probe_factory("#", broker=broker, username="watcher", password="watcher-pw")
    alice = probe_factory(broker=broker)  # the broker's first user

    assert alice.publish("allowed/x", b"1") == SUCCESS
    assert alice.publish("denied/x", b"2", check=False) == NOT_AUTHORIZED
    with pytest.raises(AssertionError, match=r"refused publish to denied/y: 0x87 Not authorized"):
        alice.publish("denied/y", b"3")
    alice.publish("allowed/end", b"4")

    # Same publisher, same QoS: delivered in order, so a denied message would be in between.
    watcher.wait_for("allowed/end")
    assert [(m.topic, m.payload) for m in watcher.drain()] == [("allowed/x", b"1")]
    assert "Denied PUBLISH from" in broker.log_text()


# -- TLS --------------------------------------------------------------------------------------


def test_tls_broker_accepts_the_test_ca(tls_broker, probe_factory, test_pki):
    probe = probe_factory("tls/#", broker=tls_broker)

    mosquitto_pub(tls_broker, "tls/cli", b"over tls")

    assert probe.wait_for("tls/cli").payload == b"over tls"
    assert tls_broker.url == f"mqtts://127.0.0.1:{tls_broker.port}"
    assert tls_broker.ca_file == test_pki.ca_file
    assert (tls_broker.client_cert, tls_broker.client_key) == (test_pki.client_cert,
                                                              test_pki.client_key)


def test_tls_client_with_another_ca_refuses_the_broker(tls_broker, test_pki):
    probe = MqttProbe(tls_broker, ca_file=test_pki.other_ca_file)

    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        probe.connect()
    assert _logged(tls_broker, "alert unknown ca"), tls_broker.log_text()


def test_mutual_tls_broker_accepts_the_test_client_certificate(mtls_broker, probe_factory):
    probe = probe_factory("mtls/#", broker=mtls_broker)  # presents the client cert by default

    mosquitto_pub(mtls_broker, "mtls/cli", b"both sides verified")

    assert probe.wait_for("mtls/cli").payload == b"both sides verified"


def test_mutual_tls_broker_refuses_a_client_without_certificate_tls12(mtls_broker):
    # TLS 1.2: the server's refusal ends the handshake, inside connect().
    probe = MqttProbe(mtls_broker, client_cert=False, tls_version=ssl.TLSVersion.TLSv1_2)

    with pytest.raises(ssl.SSLError) as failure:
        probe.connect()

    assert failure.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"
    assert _logged(mtls_broker, "peer did not return a certificate"), mtls_broker.log_text()


def test_mutual_tls_broker_refuses_a_client_without_certificate_tls13(mtls_broker):
    # TLS 1.3: the client's side of the handshake completes first, then the server closes
    # before any CONNACK; whether paho reads its alert, an EOF or a reset is a race.
    probe = MqttProbe(mtls_broker, client_cert=False, tls_version=ssl.TLSVersion.TLSv1_3)

    with pytest.raises(ProbeConnectError) as failure:
        probe.connect()

    assert failure.value.reason_code is None
    assert _logged(mtls_broker, "peer did not return a certificate"), mtls_broker.log_text()


def test_mutual_tls_broker_refuses_a_certificate_from_another_ca(mtls_broker, test_pki):
    probe = MqttProbe(mtls_broker, client_cert=(test_pki.other_client_cert,
                                                 test_pki.other_client_key))

    with pytest.raises(ProbeConnectError) as failure:
        probe.connect()

    assert failure.value.reason_code is None
    assert _logged(mtls_broker, "certificate verify failed"), mtls_broker.log_text()


def _logged(broker: Broker, text: str) -> bool:
    """Mosquitto may log a refusal after the client has seen it: wait for the line (bounded)."""
    return wait_until(lambda: text in broker.log_text(), 10)
