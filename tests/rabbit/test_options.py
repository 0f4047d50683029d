"""How subscriptions map to queues and bindings, and AMQP topic matching (no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_stream import ConfigurationError
from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.transport import SubscriptionSpec
from fastapi_stream.rabbit import ExchangeType, RabbitExchange, RabbitQueue
from fastapi_stream.rabbit.options import binding_for
from fastapi_stream.rabbit.routing import topic_matches

TOPIC = RabbitExchange("events", type=ExchangeType.TOPIC)


def spec(channel: str, group: str | None = None, **options: Any) -> SubscriptionSpec:
    return SubscriptionSpec(ChannelPattern.parse(channel), group=group, options=options)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#", "", True),
        ("#.c", "c", True),
        ("#.c", "a.b.c", True),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.b.x", False),
        ("*.b.#", "a.b", True),
        ("a.b", "a.b", True),
        ("a.b", "a.bb", False),
    ],
)
def test_topic_matches(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_a_plain_channel_is_a_queue_of_that_name() -> None:
    binding = binding_for(spec("orders"))
    assert (binding.queue.name, binding.exchange, binding.routing_key) == ("orders", None, "orders")
    assert binding.queue.durable


def test_with_an_exchange_groups_and_patterns_get_queues_of_their_own() -> None:
    grouped = binding_for(spec("orders", group="billing"), TOPIC)
    assert (grouped.queue.name, grouped.routing_key) == ("orders.billing", "orders")
    pattern = binding_for(spec("orders.{region}"), TOPIC, {"x-expires": 1000})
    assert (pattern.queue.name, pattern.routing_key) == ("orders.:region", "orders.*")
    assert pattern.queue.arguments == {"x-expires": 1000}


def test_a_rabbit_queue_keeps_its_own_settings() -> None:
    queue = RabbitQueue("audit", routing_key="orders.#", durable=False)
    binding = binding_for(spec("audit", queue=queue, exchange="events"))
    assert binding.queue is queue
    assert binding.exchange == RabbitExchange("events", declare=False)
    assert binding.routing_key == "orders.#"


@pytest.mark.parametrize(
    "bad",
    [
        spec("orders.{region}"),
        spec("orders", routing_key="other"),
        spec("orders", group="billing", queue="q", exchange=TOPIC),
    ],
    ids=["pattern", "routing-key", "queue-and-group"],
)
def test_what_the_default_exchange_cannot_do_is_a_configuration_error(
    bad: SubscriptionSpec,
) -> None:
    with pytest.raises(ConfigurationError):
        binding_for(bad)


def test_a_group_on_the_default_exchange_competes_on_the_channel_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    binding = binding_for(spec("orders", group="billing"))
    assert binding.queue.name == "orders"
    assert binding.exchange is None
    assert "give the router an exchange" in caplog.text
