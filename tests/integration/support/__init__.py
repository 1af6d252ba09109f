"""Integration-test support: real Mosquitto brokers, a throwaway PKI, an MQTT probe client,
the mosquitto_pub/mosquitto_sub command-line clients and a TCP relay that can cut a link.
The fixtures live in tests/integration/conftest.py."""

from tests.integration.support.broker import (
    HOST,
    Broker,
    BrokerFactory,
    BrokerStartError,
    free_port,
)
from tests.integration.support.cli import (
    CliMessage,
    CliResult,
    CliSubscriber,
    connection_args,
    mosquitto_pub,
    mosquitto_sub,
    run_cli,
)
from tests.integration.support.messages import Received, make_properties
from tests.integration.support.pki import Pki, make_pki
from tests.integration.support.probe import MqttProbe, ProbeConnectError
from tests.integration.support.relay import TcpRelay
from tests.integration.support.tools import find_tool, require_tool

__all__ = [
    "HOST",
    "Broker",
    "BrokerFactory",
    "BrokerStartError",
    "CliMessage",
    "CliResult",
    "CliSubscriber",
    "MqttProbe",
    "Pki",
    "ProbeConnectError",
    "Received",
    "TcpRelay",
    "connection_args",
    "find_tool",
    "free_port",
    "make_pki",
    "make_properties",
    "mosquitto_pub",
    "mosquitto_sub",
    "require_tool",
    "run_cli",
]
