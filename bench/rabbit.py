"""RabbitMQ workloads: a durable classic queue consumed with prefetch 100.

N messages are published to a fresh queue first (the same AMQP messages for all three:
a JSON body with a content type, a message id and a correlation id); the clock runs from
the consumer's start to the last message handled. The output queue of the publish
workload is declared beforehand (fastapi_stream's publishes are mandatory) and every queue
is deleted at the end.

Request -> reply runs send N requests, one after another, through a fresh durable queue to
a responder on the same connection; replies come back through direct reply-to
(``amq.rabbitmq.reply-to``), as both frameworks' requests do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import AsyncIterator

import aio_pika
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

from bench.common import (
    BODY,
    TIMEOUT,
    Done,
    Order,
    Prepare,
    Receipt,
    Request,
    Start,
    elapsed,
    framework_responder,
    receipt,
    request_replies,
    unique,
)
from bench.harness import FASTSTREAM, OURS, RAW, Implementation, Workload
from fastapi_stream.rabbit import RabbitRouter

URL = "amqp://guest:guest@127.0.0.1:5672/"
PREFETCH = 100
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
#: The least requests of a request -> reply run (the calibration grows it to ``--seconds``).
REQUESTS = 1_000


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


# -- request -> reply: N requests, one after another, through a fresh queue ----------------


@contextlib.asynccontextmanager
async def _durable_queue() -> AsyncIterator[str]:
    """A durable queue of its own for one request -> reply run, deleted afterwards."""
    queue = unique("bench.rpc")
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        yield queue
    finally:
        cleanup = await connection.channel()
        await cleanup.queue_delete(queue)
        await connection.close()


async def raw_serve(queue: str) -> tuple[Request, Start]:
    """aio-pika: a consumer of ``queue`` publishes each receipt to the request's
    ``reply_to`` and acks; the requester consumes direct reply-to on a channel of its own
    and matches replies by correlation id. No publisher confirms: the reply confirms."""
    connection = await aio_pika.connect(URL)
    serving = await connection.channel(publisher_confirms=False)

    async def answer(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        order = Order.model_validate_json(message.body)
        reply = aio_pika.Message(
            receipt(order).model_dump_json().encode(),
            content_type="application/json",
            correlation_id=message.correlation_id,
        )
        # Not mandatory: RabbitMQ returns mandatory publishes to direct reply-to, delivered or not.
        await serving.default_exchange.publish(
            reply, routing_key=message.reply_to or "", mandatory=False
        )
        await message.ack()

    declared = await serving.declare_queue(queue, durable=True)
    await declared.consume(answer)

    requesting = await connection.channel(publisher_confirms=False)
    waiting: dict[str, asyncio.Future[bytes]] = {}

    async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        waiter = waiting.get(message.correlation_id or "")
        if waiter is not None and not waiter.done():
            waiter.set_result(message.body)

    replies = await requesting.get_queue(DIRECT_REPLY_TO, ensure=False)
    await replies.consume(on_reply, no_ack=True)
    ids = itertools.count()

    async def request() -> bytes:
        correlation_id = str(next(ids))
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiting[correlation_id] = waiter
        message = aio_pika.Message(
            BODY,
            content_type="application/json",
            correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO,
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                await requesting.default_exchange.publish(message, routing_key=queue)
                return await waiter
        finally:
            del waiting[correlation_id]

    return request, connection.close


async def faststream_serve(queue: str) -> tuple[Request, Start]:
    broker = RabbitBroker(URL, logger=None)
    return await framework_responder(
        broker, broker.subscriber(RabbitQueue(queue, durable=True)), queue, broker.stop
    )


async def ours_serve(queue: str) -> tuple[Request, Start]:
    router = RabbitRouter(URL)
    return await framework_responder(
        router.broker, router.subscriber(queue), queue, router.broker.close
    )


def workloads() -> list[Workload]:
    return [
        Workload("RabbitMQ", "consume -> validate -> ack", _three()),
        Workload("RabbitMQ", "consume -> validate -> publish", _three(out=True)),
        Workload(
            "RabbitMQ",
            "request -> reply round trip",
            request_replies(
                {RAW: raw_serve, FASTSTREAM: faststream_serve, OURS: ours_serve}, _durable_queue
            ),
            unit="req/s",
            least=REQUESTS,
        ),
    ]
