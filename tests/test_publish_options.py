"""Broker publish options are checked against what the broker's publishes take (each
transport's ``publish_options``): a misspelled or foreign option fails loudly, under the
test broker as in production, instead of being ignored."""

from __future__ import annotations

import pytest

from fastapi_stream import ConfigurationError, StreamRouter
from fastapi_stream.testing import TestStreamBroker


def test_a_publisher_declared_with_an_option_its_broker_does_not_take_fails_at_once() -> None:
    router = StreamRouter("redis://127.0.0.1:6379/0")
    with pytest.raises(
        ConfigurationError, match=r"unknown publish option\(s\) \['key'\] for 'orders'"
    ):
        router.publisher("orders", key="customer-7")  # a Kafka key, on Redis
    router.publisher("orders", list=True, maxlen=1000)  # Redis's own


@pytest.mark.anyio
async def test_publish_refuses_a_misspelled_option_under_the_test_broker_too() -> None:
    router = StreamRouter("amqp://guest:guest@127.0.0.1:5672/")

    @router.subscriber("orders")
    async def handle(order: dict[str, int]) -> None:
        return None

    async with TestStreamBroker(router) as broker:
        with pytest.raises(ConfigurationError, match=r"\['priorty'\].*'priority'"):
            await broker.publish({"id": 1}, "orders", priorty=5)
        handle.mock.assert_not_called()
        await broker.publish({"id": 2}, "orders", priority=5)
        handle.mock.assert_called_once_with({"id": 2})


@pytest.mark.anyio
async def test_the_memory_broker_takes_any_option() -> None:
    router = StreamRouter("memory://publish-options")
    router.publisher("orders", key="k", anything=1)
    async with router.broker as broker:
        await broker.publish({"id": 1}, "orders", key="k")
