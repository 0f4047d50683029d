"""Batch handlers: what the broker delivered at once, validated item by item."""

from __future__ import annotations

import asyncio
import functools

import pytest
from pydantic import BaseModel

from fastapi_stream import ConfigurationError, Logger, Retry, StreamMessage, StreamRouter
from fastapi_stream.testing import TestStreamBroker
from tests import waiting

pytestmark = pytest.mark.anyio


class Order(BaseModel):
    id: int


# Handlers here answer within milliseconds: two seconds is generous.
eventually = functools.partial(waiting.eventually, timeout=2.0)


async def test_a_batch_handler_gets_what_was_queued_as_one_list(memory_url: str) -> None:
    router = StreamRouter(memory_url)
    batches: list[list[int]] = []

    @router.subscriber("orders", group="g", batch=True)
    async def handle(orders: list[Order], logger: Logger) -> None:
        batches.append([o.id for o in orders])

    async with router.broker as broker:
        await broker.stop()  # queue while nobody consumes, then consume in one go
        for i in range(10):
            await broker.publish({"id": i}, "orders")
        await broker.start()
        await eventually(lambda: sum(map(len, batches)) == 10)
    assert batches == [list(range(10))]


async def test_invalid_items_are_rejected_alone_and_failures_retry_each(
    memory_url: str,
) -> None:
    router = StreamRouter(memory_url)
    seen: list[list[int]] = []

    @router.subscriber("orders", group="g", batch=True, retry=Retry(max_attempts=2, backoff=0))
    async def handle(orders: list[Order], msg: StreamMessage) -> None:
        seen.append([o.id for o in orders])
        if len(seen) == 1:
            raise RuntimeError("first batch fails")

    async with router.broker as broker:
        await broker.stop()
        for body in ({"id": 1}, {"id": "bad"}, {"id": 2}):
            await broker.publish(body, "orders")
        await broker.start()
        await eventually(lambda: len(seen) == 2)
        await asyncio.sleep(0.05)
    assert seen == [[1, 2], [1, 2]]  # the bad one never reached the handler


async def test_the_test_broker_records_batches() -> None:
    router = StreamRouter("memory://batch-test-broker")

    @router.subscriber("orders", batch=True)
    async def handle(orders: list[Order]) -> int:
        return len(orders)

    async with TestStreamBroker(router) as broker:
        await broker.publish({"id": 5}, "orders")
        handle.mock.assert_called_once_with([{"id": 5}])


def test_a_batch_handler_declares_one_list_body() -> None:
    router = StreamRouter("memory://batch-config")
    with pytest.raises(ConfigurationError, match="list"):

        @router.subscriber("orders", batch=True)
        async def not_a_list(order: Order) -> None: ...
