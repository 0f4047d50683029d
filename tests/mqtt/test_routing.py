"""MQTT's topic rules, as the transport subscribes and as the test broker routes."""

from __future__ import annotations

import re

import pytest

from fastapi_stream import ConfigurationError
from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.core.transport import SubscriptionSpec
from fastapi_stream.mqtt.routing import MqttRouting, shared_filter, topic_filter, topic_matches


def spec(channel: str, group: str | None = None) -> SubscriptionSpec:
    return SubscriptionSpec(ChannelPattern.parse(channel), group=group)


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/b/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/", True),  # an empty level is a level
        ("a/+", "a", False),
        ("a/+", "a/b/c", False),
        ("+/+", "/x", True),
        ("a/#", "a", True),  # '#' matches the parent level
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("+/b", "a/b", True),
        ("#", "$SYS/broker/uptime", False),  # '$' topics: no leading wildcard
        ("+/broker/uptime", "$SYS/broker/uptime", False),
        ("$SYS/#", "$SYS/broker/uptime", True),
        ("$SYS/+/uptime", "$SYS/broker/uptime", True),
        ("a.b", "a.b", True),  # '.' is an ordinary character
        ("a.b", "a/b", False),
    ],
)
def test_topic_matches(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def test_parameters_fill_levels_and_map_onto_plus() -> None:
    assert topic_filter(spec("sensors/{room}/temp")) == "sensors/+/temp"
    assert topic_filter(spec("{site}/{room}")) == "+/+"
    assert topic_filter(spec("sensors/#")) == "sensors/#"
    assert shared_filter(spec("sensors/{room}", group="g")) == "$share/g/sensors/+"


@pytest.mark.parametrize("channel", ["sensors.{room}", "a/b{x}", "a/#/b", "a/b#", "a/x+"])
def test_invalid_filters_say_what_to_write(channel: str) -> None:
    with pytest.raises(ConfigurationError, match="MQTT channel"):
        topic_filter(spec(channel))


def test_dot_pattern_suggests_levels() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("'sensors/{room}'")):
        topic_filter(spec("sensors.{room}"))


def test_routing_groups_are_shared_subscriptions() -> None:
    routing = MqttRouting()
    assert routing.group_key(spec("a/{x}")) is None
    assert routing.group_key(spec("a/{x}", group="g")) == "$share/g/a/+"
    message = OutgoingMessage("a/b", b"")
    assert routing.matches(spec("a/{x}"), message)
    assert routing.matches(spec("a/#"), message)
    assert not routing.matches(spec("a/b/{x}"), message)
