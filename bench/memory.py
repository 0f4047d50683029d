"""In-process workloads: the memory broker, and the test brokers' publish round trips.

FastStream has no in-memory broker, so the memory rows compare fastapi_stream with the
floor of any in-process broker: an ``asyncio.Queue``.
"""

from __future__ import annotations

import asyncio
import time

from bench.common import BODY, PAYLOAD, TIMEOUT, Order, receipt, respond, round_trips
from bench.harness import FASTSTREAM, OURS, RAW, Workload
from fastapi_stream import StreamRouter
from fastapi_stream.testing import TestStreamBroker


async def _wait(done: asyncio.Event) -> None:
    await asyncio.wait_for(done.wait(), TIMEOUT)


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


# -- request -> reply, one request after another ------------------------------------------


async def raw_request(n: int) -> float:
    """The floor: a responder task reading an ``asyncio.Queue``, answering through a future."""
    requests: asyncio.Queue[tuple[bytes, asyncio.Future[bytes]]] = asyncio.Queue()

    async def answer() -> None:
        while True:
            body, reply = await requests.get()
            reply.set_result(receipt(Order.model_validate_json(body)).model_dump_json().encode())

    async def request() -> bytes:
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        requests.put_nowait((BODY, reply))
        async with asyncio.timeout(TIMEOUT):
            return await reply

    responder = asyncio.create_task(answer())
    try:
        return await round_trips(n, request)
    finally:
        responder.cancel()
        await asyncio.gather(responder, return_exceptions=True)


async def ours_request(n: int) -> float:
    router = StreamRouter(f"memory://bench-{time.monotonic_ns()}")
    router.subscriber("orders")(respond)
    async with router.broker as broker:

        async def request() -> bytes:
            return (await broker.request(PAYLOAD, "orders", timeout=TIMEOUT)).body

        return await round_trips(n, request)


def workloads() -> list[Workload]:
    return [
        Workload("memory", "consume -> validate -> ack", {RAW: raw_queue, OURS: ours_memory}),
        Workload(
            "memory",
            "request -> reply round trip",
            {RAW: raw_request, OURS: ours_request},
            unit="req/s",
        ),
        Workload(
            "test broker",
            "publish -> handler round trip",
            {RAW: raw_call, FASTSTREAM: faststream_test_broker, OURS: ours_test_broker},
        ),
    ]
