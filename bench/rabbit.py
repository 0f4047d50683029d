"""RabbitMQ workloads: a durable classic queue consumed with prefetch 100.

N messages are published to a fresh queue first (the same AMQP messages for all three:
a JSON body with a content type, a message id and a correlation id); the clock runs from
the consumer's start to the last message handled. The output queue of the publish
workload is declared beforehand (fastapi_stream's publishes are mandatory) and every queue
is deleted at the end.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

import aio_pika
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

from bench.common import BODY, TIMEOUT, Done, Order, Receipt, elapsed, receipt, unique
from bench.harness import FASTSTREAM, OURS, RAW, Implementation, Workload
from fastapi_stream.rabbit import RabbitRouter

URL = "amqp://guest:guest@127.0.0.1:5672/"
PREFETCH = 100

Start = Callable[[], Awaitable[object]]
#: ``prepare(queue, out, done)`` connects and registers a consumer of ``queue`` (publishing
#: to ``out`` when it is not empty) and returns ``(start, close)``.
Prepare = Callable[[str, str, Done], Awaitable[tuple[Start, Start]]]


async def _run(n: int, *, prepare: Prepare, out: bool) -> float:
    queue, out_queue = unique("bench.orders"), (unique("bench.out") if out else "")
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel(publisher_confirms=False)
        for name in filter(None, (queue, out_queue)):
            await channel.declare_queue(name, durable=True)
        for i in range(n):
            await channel.default_exchange.publish(
                aio_pika.Message(
                    BODY, content_type="application/json", message_id=str(i), correlation_id=str(i)
                ),
                routing_key=queue,
            )
        async with asyncio.timeout(TIMEOUT):
            while await _depth(channel, queue) < n:  # noqa: ASYNC110 - polling the broker
                await asyncio.sleep(0.05)
        done = Done(n)
        start, close = await prepare(queue, out_queue, done)
        try:
            started = time.perf_counter()
            await start()
            return await elapsed(started, done)
        finally:
            await close()
    finally:
        cleanup = await connection.channel()
        for name in filter(None, (queue, out_queue)):
            await cleanup.queue_delete(name)
        await connection.close()


async def _depth(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def raw(queue: str, out: str, done: Done) -> tuple[Start, Start]:
    """aio-pika: a consumer callback, each message acked (acks are not waited for)."""
    connection = await aio_pika.connect(URL)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)

    async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        order = Order.model_validate_json(message.body)
        if out:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    receipt(order).model_dump_json().encode(), content_type="application/json"
                ),
                routing_key=out,
            )
        await message.ack()
        done.hit()

    async def start() -> None:
        declared = await channel.declare_queue(queue, durable=True)
        await declared.consume(handle)

    return start, connection.close


def _handler(done: Done, out: bool):  # type: ignore[no-untyped-def]
    async def handle(order: Order) -> Receipt | None:
        done.hit()
        return receipt(order) if out else None

    return handle


async def faststream(queue: str, out: str, done: Done) -> tuple[Start, Start]:
    broker = RabbitBroker(URL, logger=None)
    handle = _handler(done, bool(out))
    if out:
        handle = broker.publisher(out)(handle)
    broker.subscriber(RabbitQueue(queue, durable=True), channel=Channel(prefetch_count=PREFETCH))(
        handle
    )
    await broker.connect()
    return broker.start, broker.stop


async def ours(queue: str, out: str, done: Done) -> tuple[Start, Start]:
    router = RabbitRouter(URL)
    handle = _handler(done, bool(out))
    if out:
        handle = router.publisher(out)(handle)
    router.subscriber(queue, prefetch=PREFETCH)(handle)
    await router.broker.connect()
    return router.broker.start, router.broker.close


def _three(*, out: bool = False) -> dict[str, Implementation]:
    return {
        impl: functools.partial(_run, prepare=prepare, out=out)
        for impl, prepare in ((RAW, raw), (FASTSTREAM, faststream), (OURS, ours))
    }


def workloads() -> list[Workload]:
    return [
        Workload("RabbitMQ", "consume -> validate -> ack", _three()),
        Workload("RabbitMQ", "consume -> validate -> publish", _three(out=True)),
    ]
