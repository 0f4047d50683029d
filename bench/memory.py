"""In-process workloads: the memory broker, and the test brokers' publish round trips."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel

from bench.harness import FASTSTREAM, OURS, RAW, Workload
from fastapi_stream import StreamRouter
from fastapi_stream.testing import TestStreamBroker


class Order(BaseModel):
    id: int
    sku: str
    amount: float


BODY = b'{"id": 1, "sku": "apple", "amount": 2.5}'
PAYLOAD = {"id": 1, "sku": "apple", "amount": 2.5}


async def _wait(done: asyncio.Event) -> None:
    await asyncio.wait_for(done.wait(), 120)


# -- consume -> validate -> ack, N messages queued before consuming ----------------------


async def raw_queue(n: int) -> float:
    """The floor: an asyncio.Queue of bytes and a loop validating each."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for _ in range(n):
        queue.put_nowait(BODY)
    started = time.perf_counter()
    for _ in range(n):
        Order.model_validate_json(queue.get_nowait())
        queue.task_done()
    return time.perf_counter() - started


async def ours_memory(n: int) -> float:
    router = StreamRouter(f"memory://bench-{time.monotonic_ns()}?max_queue={n}")
    done = asyncio.Event()
    count = 0

    @router.subscriber("orders", group="bench", prefetch=1000)
    async def handle(order: Order) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async with router.broker as broker:
        await broker.stop()
        for _ in range(n):
            await broker.publish(PAYLOAD, "orders")
        started = time.perf_counter()
        await broker.start()
        await _wait(done)
        return time.perf_counter() - started


# -- the test brokers: publish -> handler round trips -----------------------------------


async def raw_call(n: int) -> float:
    """The floor: validate and call the handler directly."""

    async def handle(order: Order) -> None:
        return None

    started = time.perf_counter()
    for _ in range(n):
        await handle(Order.model_validate_json(BODY))
    return time.perf_counter() - started


async def ours_test_broker(n: int) -> float:
    router = StreamRouter("memory://bench-test-broker")

    @router.subscriber("orders")
    async def handle(order: Order) -> None:
        return None

    async with TestStreamBroker(router) as broker:
        started = time.perf_counter()
        for _ in range(n):
            await broker.publish(PAYLOAD, "orders")
        return time.perf_counter() - started


async def faststream_test_broker(n: int) -> float:
    from faststream.kafka import KafkaBroker, TestKafkaBroker

    broker = KafkaBroker()

    @broker.subscriber("orders")
    async def handle(order: Order) -> None:
        return None

    async with TestKafkaBroker(broker) as test_broker:
        started = time.perf_counter()
        for _ in range(n):
            await test_broker.publish(PAYLOAD, "orders")
        return time.perf_counter() - started


def workloads() -> list[Workload]:
    return [
        Workload("memory", "consume -> validate -> ack", {RAW: raw_queue, OURS: ours_memory}),
        Workload(
            "test broker",
            "publish -> handler round trip",
            {RAW: raw_call, FASTSTREAM: faststream_test_broker, OURS: ours_test_broker},
        ),
    ]
