"""Redis workloads: a stream read through a consumer group (XREADGROUP + XACK), and a
list used as a work queue.

N messages are written first, each in the format its consumer's producer writes
(fastapi_stream's envelope, FastStream's binary format, a plain body for the raw loop);
the clock runs from the consumer's start to the last message handled. Every key a run
creates starts with the run's unique prefix and is deleted at the end.

Request -> reply runs send N requests, one after another, over pub/sub (what both
frameworks' requests use by default) to a responder in the same process; they write no
keys.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.redis import ListSub, RedisBroker
from faststream.redis import StreamSub as FSStreamSub
from faststream.redis.parser.binary import BinaryMessageFormatV1
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from bench.common import (
    BODY,
    PAYLOAD,
    TIMEOUT,
    Done,
    Order,
    Prepare,
    Receipt,
    Request,
    Start,
    elapsed,
    framework_responder,
    fresh,
    receipt,
    request_replies,
    unique,
)
from bench.harness import FASTSTREAM, OURS, RAW, Implementation, Workload
from fastapi_stream.core.envelope import pack as encode_value
from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.redis import RedisRouter, StreamSub
from fastapi_stream.redis.wire import stream_fields

URL = "redis://127.0.0.1:6379"
GROUP = "bench"
#: The least requests of a request -> reply run (the calibration grows it to ``--seconds``).
REQUESTS = 1_000


async def _values(impl: str, name: str, n: int) -> list[bytes]:
    """N list items (stream ``body`` fields) as ``impl``'s producer writes them."""
    if impl == OURS:
        return [
            encode_value(OutgoingMessage(name, BODY, content_type="application/json"))
            for _ in range(n)
        ]
    if impl == FASTSTREAM:
        return [
            await BinaryMessageFormatV1.encode(
                message=PAYLOAD, reply_to=None, headers=None, correlation_id=str(i)
            )
            for i in range(n)
        ]
    return [BODY] * n


def _fields(impl: str, value: bytes) -> dict[Any, Any]:
    if impl == OURS:
        return stream_fields(OutgoingMessage("", BODY, content_type="application/json"))
    if impl == FASTSTREAM:
        return {"__data__": value}
    return {"body": value}


async def _run(n: int, *, kind: str, impl: str, prepare: Prepare, out: bool) -> float:
    prefix = unique("bench")
    name, out_name = f"{prefix}:orders", (f"{prefix}:out" if out else "")
    client = Redis.from_url(URL)
    done = Done(n)
    try:
        values = await _values(impl, name, n)
        for i in range(0, n, 1000):
            async with client.pipeline(transaction=False) as pipe:
                for value in values[i : i + 1000]:
                    if kind == "stream":
                        pipe.xadd(name, _fields(impl, value))
                    else:
                        pipe.rpush(name, value)
                await pipe.execute()
        if kind == "stream":
            await client.xgroup_create(name, GROUP, id="0")
        start, close = await prepare(name, out_name, done)
        try:
            started = time.perf_counter()
            await start()
            return await elapsed(started, done)
        finally:
            await close()
    finally:
        keys = [key async for key in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def _handler(done: Done, out: bool):  # type: ignore[no-untyped-def]
    async def handle(order: Order) -> Receipt | None:
        done.hit()
        return receipt(order) if out else None

    return handle


# -- raw redis-py: batches of 100, acked (XACK) or published per batch ---------------------


def raw_stream(name: str, out: str, done: Done) -> Awaitable[tuple[Start, Start]]:
    client = Redis.from_url(URL)

    async def consume() -> None:
        while done.count < done.n:
            response = await client.xreadgroup(GROUP, "raw", {name: ">"}, count=100, block=1000)
            if not response:
                continue
            entries = response[0][1]
            ids = []
            receipts = []
            for entry_id, fields in entries:
                order = Order.model_validate_json(fields[b"body"])
                if out:
                    receipts.append({"body": receipt(order).model_dump_json()})
                ids.append(entry_id)
            if out:
                async with client.pipeline(transaction=False) as pipe:
                    for fields in receipts:
                        pipe.xadd(out, fields)
                    await pipe.execute()
            await client.xack(name, GROUP, *ids)
            done.hit(len(ids))

    return _raw(client, consume)


def raw_list(name: str, out: str, done: Done) -> Awaitable[tuple[Start, Start]]:
    client = Redis.from_url(URL)

    async def consume() -> None:
        while done.count < done.n:
            items = await client.lpop(name, 100)
            if not items:
                await asyncio.sleep(0.01)
                continue
            orders = [Order.model_validate_json(item) for item in items]
            if out:
                await client.rpush(out, *(receipt(o).model_dump_json() for o in orders))
            done.hit(len(items))

    return _raw(client, consume)


async def _raw(client: Redis, consume: Callable[[], Awaitable[None]]) -> tuple[Start, Start]:
    await client.ping()
    task: list[asyncio.Task[None]] = []

    async def start() -> None:
        task.append(asyncio.create_task(consume()))

    async def close() -> None:
        for t in task:
            t.cancel()
        await asyncio.gather(*task, return_exceptions=True)
        await client.aclose()

    return start, close


# -- the frameworks -------------------------------------------------------------------------


def faststream(kind: str) -> Prepare:
    async def prepare(name: str, out: str, done: Done) -> tuple[Start, Start]:
        broker = RedisBroker(URL, logger=None)
        handle = _handler(done, bool(out))
        if kind == "stream":
            if out:
                handle = broker.publisher(stream=out)(handle)
            broker.subscriber(stream=FSStreamSub(name, group=GROUP, consumer="fs"))(handle)
        else:
            if out:
                handle = broker.publisher(list=out)(handle)
            broker.subscriber(list=ListSub(name))(handle)
        await broker.connect()
        return broker.start, broker.stop

    return prepare


def ours(kind: str) -> Prepare:
    async def prepare(name: str, out: str, done: Done) -> tuple[Start, Start]:
        router = RedisRouter(URL)
        handle = _handler(done, bool(out))
        if kind == "stream":
            if out:
                handle = router.publisher(stream=out)(handle)
            router.subscriber(stream=StreamSub(name, group=GROUP, last_id="0"))(handle)
        else:
            if out:
                handle = router.publisher(list=out)(handle)
            router.subscriber(list=name)(handle)
        await router.broker.connect()
        return router.broker.start, router.broker.close

    return prepare


def _three(kind: str, *, out: bool = False) -> dict[str, Implementation]:
    raw = raw_stream if kind == "stream" else raw_list
    return {
        impl: functools.partial(_run, kind=kind, impl=impl, prepare=prepare, out=out)
        for impl, prepare in ((RAW, raw), (FASTSTREAM, faststream(kind)), (OURS, ours(kind)))
    }


# -- request -> reply over pub/sub: N requests, one after another -------------------------


async def raw_serve(channel: str) -> tuple[Request, Start]:
    """redis-py pub/sub: a responder task answers each request on a reply channel the
    requester subscribed to beforehand (one requester, one request at a time: replies need
    no correlation)."""
    client = Redis.from_url(URL)
    reply_channel = f"{channel}:reply"
    requests, replies = client.pubsub(), client.pubsub()
    await requests.subscribe(channel)
    await replies.subscribe(reply_channel)

    async def answer() -> None:
        while True:
            order = Order.model_validate_json(await _next_message(requests, timeout=None))
            await client.publish(reply_channel, receipt(order).model_dump_json())

    async def request() -> bytes:
        await client.publish(channel, BODY)
        return await _next_message(replies, timeout=TIMEOUT)

    responder = asyncio.create_task(answer())

    async def close() -> None:
        responder.cancel()
        await asyncio.gather(responder, return_exceptions=True)
        await requests.aclose()
        await replies.aclose()
        await client.aclose()

    return request, close


async def _next_message(pubsub: PubSub, *, timeout: float | None) -> bytes:
    """The data of the next message of ``pubsub`` (subscribe confirmations skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is not None and message["type"] == "message":
                return message["data"]  # type: ignore[no-any-return]


async def faststream_serve(channel: str) -> tuple[Request, Start]:
    broker = RedisBroker(URL, logger=None)
    return await framework_responder(broker, broker.subscriber(channel), channel, broker.stop)


async def ours_serve(channel: str) -> tuple[Request, Start]:
    router = RedisRouter(URL)
    return await framework_responder(
        router.broker, router.subscriber(channel), channel, router.broker.close
    )


def workloads() -> list[Workload]:
    return [
        Workload("Redis stream", "consume -> validate -> ack", _three("stream")),
        Workload("Redis stream", "consume -> validate -> publish", _three("stream", out=True)),
        Workload("Redis list", "consume -> validate -> ack", _three("list")),
        Workload("Redis list", "consume -> validate -> publish", _three("list", out=True)),
        Workload(
            "Redis pub/sub",
            "request -> reply round trip",
            request_replies(
                {RAW: raw_serve, FASTSTREAM: faststream_serve, OURS: ours_serve}, fresh("bench:rpc")
            ),
            unit="req/s",
            least=REQUESTS,
        ),
    ]
