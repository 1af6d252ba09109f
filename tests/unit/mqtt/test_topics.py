"""Topic strings, byte-exact (PROTOCOL.md §6.1)."""

from __future__ import annotations

import pytest
from paho.mqtt.client import topic_matches_sub

from bridge.mqtt.topics import (
    BridgeTopics,
    ReaderTopics,
    bridge_list_wildcard,
    device_list_wildcard,
    model_segment,
    parse_send_command_topic,
    reader_root,
    validate_prefix,
)


def test_model_segment():
    assert model_segment("DynaFlex II") == "DynaFlexII"
    assert model_segment("DynaFlex II Go") == "DynaFlexIIGo"
    assert model_segment("Dyna-Prox (v2)") == "DynaProxv2"


def test_reader_root_plain_and_friendly():
    assert reader_root("MagTek/Device/", "DynaFlexII", "B123456") == (
        "MagTek/Device/DynaFlexII/B123456")
    assert reader_root("MagTek/US/CA/SealBeach/Name/", "DynaFlexII", "B123456", "Lane 1!") == (
        "MagTek/US/CA/SealBeach/Name/DynaFlexII/Lane1-B123456")


def test_reader_topics_and_wildcard_depth():
    topics = ReaderTopics.for_root("MagTek/Device/DynaFlexII/B123456")
    assert (topics.status, topics.mms_message, topics.send_command, topics.info,
            topics.error) == (
        "MagTek/Device/DynaFlexII/B123456/Status",
        "MagTek/Device/DynaFlexII/B123456/MMSMessage",
        "MagTek/Device/DynaFlexII/B123456/SendCommand",
        "MagTek/Device/DynaFlexII/B123456/Info",
        "MagTek/Device/DynaFlexII/B123456/Error",
    )
    assert device_list_wildcard("MagTek/Device/") == "MagTek/Device/+/+/Status"
    # MagTek's demo default wildcard matches exactly their 5-level org prefix.
    assert device_list_wildcard("MagTek/US/CA/SealBeach/Name/") == (
        "MagTek/US/CA/SealBeach/Name/+/+/Status")
    bridge = BridgeTopics("MagTek/Bridge/", "pi-7")
    assert (bridge.status, bridge.info) == ("MagTek/Bridge/pi-7/State",
                                      "MagTek/Bridge/pi-7/BridgeInfo")


@pytest.mark.parametrize("prefix", ["MagTek/Device", "/MagTek/", "MagTek/+/", "a//b/", "#/"])
def test_bad_prefixes(prefix):
    with pytest.raises(ValueError):
        validate_prefix(prefix)


def test_parse_send_command_topic():
    prefix = "MagTek/Device/"
    assert parse_send_command_topic(prefix, "MagTek/Device/DynaFlexII/B1/SendCommand") == (
        "MagTek/Device/DynaFlexII/B1")
    assert parse_send_command_topic(prefix, "MagTek/Device/DynaFlexII/B1/x/SendCommand") is None
    assert parse_send_command_topic(prefix, "Other/DynaFlexII/B1/SendCommand") is None



@pytest.mark.parametrize("bridge_prefix", ["MagTek/Bridge/", "MagTek/", "Store/0042/Bridge/",
                                           "MagTek/US/CA/SealBeach/Name/"])
def test_no_reader_wildcard_matches_a_bridge_topic_at_any_depth(bridge_prefix):
    bridge = BridgeTopics(bridge_prefix, "pi-7")
    for topic in (bridge.status, bridge.info):
        depth = topic.count("/") + 1
        for leaf in ("Status", "Info"):
            # A filter ending in a literal level matches only topics ending in it ('#' can
            # only be last), and the widest such filter of this depth is all '+'.
            assert not topic_matches_sub("/".join(["+"] * (depth - 1) + [leaf]), topic)
            assert not topic_matches_sub(device_list_wildcard(bridge_prefix), topic)
    assert topic_matches_sub(bridge_list_wildcard(bridge_prefix), bridge.status)
    assert topic_matches_sub("MagTek/Bridge/+/State", BridgeTopics("MagTek/Bridge/", "x").status)
