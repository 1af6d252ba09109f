"""Fixtures: real Mosquitto brokers on free 127.0.0.1 ports, and MQTT probe clients.

A missing ``mosquitto`` fails the test (with install instructions), it never skips.
The machinery is in tests/integration/support/; the broker configs are templates in
tests/integration/mosquitto/.

Fixtures:
    mosquitto_factory (alias broker_factory): ``make(start=, auth=, users=, acl=, tls=,
        require_certificate=, port=, extra=) -> Broker``; every broker is stopped at
        teardown, and several can run at once.
    broker, auth_broker, tls_broker, mtls_broker: one started broker of each kind.
    test_pki: the session's throwaway CA, server and client certificates.
    probe_factory: ``make(*topics, broker=None, **probe_options) -> MqttProbe``,
        connected and subscribed; closed at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import Broker, BrokerFactory, MqttProbe, Pki, make_pki


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and client certificates."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mosquitto_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BrokerFactory]:
    """Makes brokers (see ``BrokerFactory.__call__``); stops them all afterwards."""
    root = tmp_path / "mosquitto"
    root.mkdir()
    factory = BrokerFactory(root, lambda: request.getfixturevalue("test_pki"))
    yield factory
    factory.close()


@pytest.fixture
def broker_factory(mosquitto_factory: BrokerFactory) -> BrokerFactory:
    """The same factory as ``mosquitto_factory``."""
    return mosquitto_factory


@pytest.fixture
def broker(mosquitto_factory: BrokerFactory) -> Broker:
    """A started anonymous broker."""
    return mosquitto_factory()


@pytest.fixture
def auth_broker(mosquitto_factory: BrokerFactory) -> Broker:
    """A started broker that wants ``broker.username``/``broker.password``."""
    return mosquitto_factory(auth=True)


@pytest.fixture
def tls_broker(mosquitto_factory: BrokerFactory) -> Broker:
    """A started TLS broker (server certificate from ``test_pki``)."""
    return mosquitto_factory(tls=True)


@pytest.fixture
def mtls_broker(mosquitto_factory: BrokerFactory) -> Broker:
    """A started TLS broker that also requires a client certificate from ``test_pki``."""
    return mosquitto_factory(tls=True, require_certificate=True)


@pytest.fixture
def probe_factory(mosquitto_factory: BrokerFactory, request: pytest.FixtureRequest
                  ) -> Iterator[Callable[..., MqttProbe]]:
    """Makes connected probes subscribed to ``topics`` (QoS 1) on ``broker`` (default: the
    ``broker`` fixture); closes them afterwards."""
    # Depending on mosquitto_factory makes pytest close the probes before it stops the
    # brokers, so no probe sits in paho's reconnect delay at teardown.
    del mosquitto_factory
    probes: list[MqttProbe] = []

    def make(*topics: str, broker: Broker | None = None, **options: Any) -> MqttProbe:
        target = broker if broker is not None else request.getfixturevalue("broker")
        probe = MqttProbe(target, **options)
        probes.append(probe)
        probe.connect()
        if topics:
            probe.subscribe(*topics)
        return probe

    yield make
    for probe in probes:
        probe.close()
