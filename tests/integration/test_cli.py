"""The command line: decode, devices, send, monitor and the README's demo."""

from __future__ import annotations

import _thread
import gc
import io
import json
import threading
import warnings

import pytest

from bridge import client
from bridge.app import link_options
from bridge.cli import main
from bridge.demo import run_demo
from bridge.mms import commands
from bridge.transport.simulated import SimulatedBus
from tests.integration.harness import bridge_settings, running_bridge, wait_until

pytestmark = pytest.mark.integration

ARQC = ("AA008104830001018204200802028482009A0101848200940088F98185DFDF540A0000000000000000"
        "0000DFDF550182DFDF250742313233343536FA657063DFDF530100DFDF4D273B3437363137333030303030"
        "3030313139"
        "3D32353132323031303030303030303030303030303FDFDF520106F82CDFDF5910000102030405060708"
        "090A0B0C0D0E0FDFDF560AFFFF9876543210E00001DFDF570180DFDF58010000000000000000000000")


def test_decode_masks_card_data(capsys):
    assert main(["decode", ARQC]) == 0
    out = capsys.readouterr().out
    assert "0101" in out and "20080202" in out
    assert "4761730000000119" not in out and "3437363137333030" not in out
    assert main(["decode", "--json", "AA00810401B5D1018418D10181072B06010401F609850102870402010101",
                 "8902C100"]) == 0
    decoded = json.loads(capsys.readouterr().out)
    assert json.dumps(decoded).count("D101") >= 1
    assert main(["decode", "zz"]) == 1


def test_devices_says_none_found(capsys):
    assert main(["devices"]) == 0
    assert "No MagTek MMS readers found" in capsys.readouterr().out


def test_send_and_monitor_through_the_broker(broker):
    bus = SimulatedBus(count=1, auto_present=None)
    with running_bridge(broker, bus=bus):
        options = link_options(bridge_settings(broker))
        root = client.resolve_root(options, "MagTek/Device/", "auto", timeout=10)
        assert root == "MagTek/Device/DynaFlexII/B123456"
        seen = io.StringIO()
        monitor = threading.Thread(target=client.monitor, args=(options, "MagTek/Device/"),
                                   kwargs={"count": 2, "duration": 10, "out": seen})
        monitor.start()
        out = io.StringIO()
        assert client.send(options, root, commands.command_by_name("get_serial"),
                           out=out) == 0
        assert "D101" in out.getvalue()
        # A failure status from the reader is exit code 1 (cancel with no transaction).
        assert client.send(options, root, commands.cancel_transaction(), out=io.StringIO()) == 1
        # The bridge's own rejection is exit code 4 (a device response is no command).
        rejected = bytes.fromhex("AA00810482131008820400000000")
        assert client.send(options, root, rejected, out=io.StringIO()) == 4
        monitor.join(15)
        assert "MagTek/Device/DynaFlexII/B123456" in seen.getvalue()


def test_ctrl_c_ends_send_follow_quietly_with_the_response_code(broker):
    """Ctrl-C is how a person stops ``send --follow``: the answer stands, no traceback."""
    bus = SimulatedBus(count=1, auto_present=None)
    with running_bridge(broker, bus=bus):
        options = link_options(bridge_settings(broker))
        root = client.resolve_root(options, "MagTek/Device/", "auto", timeout=10)
        out = io.StringIO()

        def press_ctrl_c_after_the_response() -> None:
            if wait_until(lambda: "D101" in out.getvalue(), 30, 0.05):
                _thread.interrupt_main()

        presser = threading.Thread(target=press_ctrl_c_after_the_response)
        presser.start()
        try:
            code = client.send(options, root, commands.command_by_name("get_serial"),
                               follow=60, out=out)
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C escaped send as a KeyboardInterrupt (a traceback in the CLI)")
        finally:
            presser.join(30)
        assert code == 0, out.getvalue()
        assert "B123456" in out.getvalue()


def test_demo_runs_a_whole_transaction():
    out = io.StringIO()
    # amqtt leaves its client transports to the garbage collector after shutdown; collect
    # them here, where their ResourceWarnings are known and not ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        assert run_demo(card="insert", log_level="warning", out=out) == 0
        gc.collect()
    text = out.getvalue()
    assert "done: the whole transaction flowed through MQTT" in text
    assert "10080202" in text  # the ARQC notification of an inserted card
    assert "4761730000000119" not in text
