"""Kafka workloads on a Kafka-protocol broker (tansu in development), through consumer groups.

N records are produced first into a fresh topic of four partitions: the same records for
all three, a JSON value with the headers both frameworks' producers write (content-type,
message_id, correlation_id). Then a consumer in a fresh group reads them from the
earliest offset, committing what it handled: at-least-once, except FastStream, whose
default (``AckPolicy.ACK_FIRST``) is aiokafka's periodic auto-commit.

Joining a group is slow on tansu: about a second even with ``session_timeout_ms=1000``,
which every consumer here uses (as the tests do), and a second would weigh on runs of a
few seconds. So the clock runs from the first record in hand to the last one handled: the
join, and the offset lookups before the first fetch, are left out the same way for all
three.

Request -> reply runs send N requests, one after another, to a responder in a fresh group
on a fresh topic, in the same process. FastStream 0.7.8 has no request on a real Kafka
broker (only with its test client), so that row has no FastStream figure. Its consumers
wait at most 10 ms per fetch (``fetch_max_wait_ms``; aiokafka's default is 500 ms): tansu
answers a fetch waiting on an empty partition only when that wait is over, not when a
record arrives (Apache Kafka answers at once), so a round trip still includes fetch waits.

Every topic a run creates is deleted at the end. Each group is named after its topic and
keeps nothing once the topic is gone (aiokafka's admin client cannot delete a group).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream.kafka import KafkaBroker

from bench.common import (
    BODY,
    TIMEOUT,
    Done,
    Order,
    Receipt,
    Request,
    Start,
    framework_responder,
    receipt,
    request_replies,
    unique,
)
from bench.harness import FASTSTREAM, OURS, RAW, Implementation, Workload
from fastapi_stream.kafka import KafkaRouter

SERVERS = "127.0.0.1:9092"
PARTITIONS = 4
#: Fast group joins on tansu (docs/kafka.md), for every consumer of every implementation.
SESSION_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS = 1_000, 300
#: Records produced per round of sends whose confirmations are awaited together.
PRODUCE_BATCH = 10_000
#: The least requests of a request -> reply run: on tansu each one waits for fetches.
REQUESTS = 100
#: The request rows' fetch wait: tansu answers a waiting fetch only when the wait is over.
REQUEST_FETCH_WAIT_MS = 10


class FromFirstRecord(Done):
    """A ``Done`` whose clock starts when the first record is in hand (``begin``, or the
    first ``hit``), after the group join."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.first: float | None = None

    def begin(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def hit(self, k: int = 1) -> None:
        self.begin()
        super().hit(k)

    async def elapsed(self) -> float:
        """Seconds from the first record in hand to the last one handled."""
        await self.wait()
        assert self.first is not None
        return time.perf_counter() - self.first


#: ``prepare(topic, out, done)`` connects and registers a consumer of ``topic`` in the group
#: named after it (publishing to ``out`` when it is not empty) and returns ``(start, close)``.
Prepare = Callable[[str, str, FromFirstRecord], Awaitable[tuple[Start, Start]]]


def _headers(i: int) -> list[tuple[str, bytes]]:
    # What both frameworks' producers send: a content type and their ids.
    return [
        ("content-type", b"application/json"),
        ("message_id", str(i).encode()),
        ("correlation_id", str(i).encode()),
    ]


async def _produce(topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=SERVERS)
    await producer.start()
    try:
        async with asyncio.timeout(TIMEOUT):
            for first in range(0, n, PRODUCE_BATCH):
                last = min(n, first + PRODUCE_BATCH)
                sent = [
                    await producer.send(topic, BODY, headers=_headers(i))
                    for i in range(first, last)
                ]
                await asyncio.gather(*sent)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def _topics(*names: str, partitions: int = PARTITIONS) -> AsyncIterator[None]:
    """Fresh topics (the names that are not empty) for one run, deleted on the way out."""
    topics = [name for name in names if name]
    admin = AIOKafkaAdminClient(bootstrap_servers=SERVERS)
    await admin.start()
    try:
        async with asyncio.timeout(TIMEOUT):
            await admin.create_topics([NewTopic(topic, partitions, 1) for topic in topics])
        yield
    finally:
        try:
            async with asyncio.timeout(TIMEOUT):
                await admin.delete_topics(topics)
        finally:
            await admin.close()


async def _closed(close: Start) -> None:
    async with asyncio.timeout(TIMEOUT):
        await close()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# -- consume: N records in a fresh topic, a consumer in a fresh group ---------------------


async def _run(n: int, *, prepare: Prepare, out: bool) -> float:
    topic, out_topic = unique("bench-orders"), (unique("bench-out") if out else "")
    async with _topics(topic, out_topic):
        await _produce(topic, n)
        done = FromFirstRecord(n)
        start, close = await prepare(topic, out_topic, done)
        try:
            await start()
            return await done.elapsed()
        finally:
            await _closed(close)


def _consumer(*topics: str, group: str, **options: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=SERVERS,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        **options,
    )


async def raw(topic: str, out: str, done: FromFirstRecord) -> tuple[Start, Start]:
    """aiokafka: ``getmany`` batches, each record validated, the batch's offsets committed
    once its receipts (publish workload) were confirmed: at-least-once."""
    consumer = _consumer(topic, group=topic)
    producer = AIOKafkaProducer(bootstrap_servers=SERVERS) if out else None
    if producer is not None:
        await producer.start()
    consuming: list[asyncio.Task[None]] = []

    async def consume() -> None:
        while done.count < done.n:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches:
                continue
            done.begin()
            orders = [Order.model_validate_json(record.value) for record in _records(batches)]
            if producer is not None:
                sent = [
                    await producer.send(out, receipt(order).model_dump_json().encode())
                    for order in orders
                ]
                await asyncio.gather(*sent)
            await consumer.commit()
            done.hit(len(orders))

    async def start() -> None:
        await consumer.start()
        consuming.append(asyncio.create_task(consume()))

    async def close() -> None:
        for task in consuming:
            await _cancel(task)
        await consumer.stop()
        if producer is not None:
            await producer.stop()

    return start, close


def _records(batches: Mapping[TopicPartition, list[ConsumerRecord]]) -> Iterator[ConsumerRecord]:
    """Every record of a ``getmany`` answer."""
    return itertools.chain.from_iterable(batches.values())


def _handler(done: Done, out: bool):  # type: ignore[no-untyped-def]
    """The framework handler: a validated ``Order`` in, a ``Receipt`` out when ``out``."""

    async def handle(order: Order) -> Receipt | None:
        done.hit()
        return receipt(order) if out else None

    return handle


async def faststream(topic: str, out: str, done: FromFirstRecord) -> tuple[Start, Start]:
    broker = KafkaBroker(SERVERS, logger=None)
    handle = _handler(done, bool(out))
    if out:
        handle = broker.publisher(out)(handle)
    broker.subscriber(
        topic,
        group_id=topic,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )(handle)
    await broker.connect()
    return broker.start, broker.stop


async def ours(topic: str, out: str, done: FromFirstRecord) -> tuple[Start, Start]:
    router = _router()
    handle = _handler(done, bool(out))
    if out:
        handle = router.publisher(out)(handle)
    router.subscriber(topic, group_id=topic)(handle)
    await router.broker.connect()
    return router.broker.start, router.broker.close


def _router(**consumer_options: Any) -> KafkaRouter:
    return KafkaRouter(
        SERVERS,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        consumer_options=consumer_options,
    )


def _three(*, out: bool = False) -> dict[str, Implementation]:
    return {
        impl: functools.partial(_run, prepare=prepare, out=out)
        for impl, prepare in ((RAW, raw), (FASTSTREAM, faststream), (OURS, ours))
    }


# -- request -> reply: N requests, one after another, to a responder in a fresh group ------


@contextlib.asynccontextmanager
async def _rpc_topic() -> AsyncIterator[str]:
    topic = unique("bench-rpc")
    async with _topics(topic):
        yield topic


async def raw_serve(topic: str) -> tuple[Request, Start]:
    """aiokafka: the responder answers each request on its ``reply_to`` topic, committing
    once the replies are confirmed; the requester reads a reply topic of its own from its
    end, without a group, and matches replies by correlation id."""
    replies_topic = f"{topic}.replies"
    responder = _consumer(topic, group=topic, fetch_max_wait_ms=REQUEST_FETCH_WAIT_MS)
    producer = AIOKafkaProducer(bootstrap_servers=SERVERS)
    replies = AIOKafkaConsumer(
        bootstrap_servers=SERVERS,
        enable_auto_commit=False,
        fetch_max_wait_ms=REQUEST_FETCH_WAIT_MS,
    )
    opened = contextlib.AsyncExitStack()  # closed last-in first-out
    try:
        await opened.enter_async_context(_topics(replies_topic, partitions=1))
        for client in (producer, responder, replies):
            await client.start()
            opened.push_async_callback(client.stop)
        partition = TopicPartition(replies_topic, 0)
        replies.assign([partition])
        await replies.seek_to_end(partition)
        await replies.position(partition)  # from here on, every reply is read
    except BaseException:
        await opened.aclose()
        raise

    async def answer() -> None:
        while True:
            batches = await responder.getmany(timeout_ms=500)
            sent = []
            for record in _records(batches):
                headers = dict(record.headers)
                order = Order.model_validate_json(record.value)
                reply = receipt(order).model_dump_json().encode()
                correlation = [("correlation_id", headers["correlation_id"])]
                sent.append(
                    await producer.send(headers["reply_to"].decode(), reply, headers=correlation)
                )
            if sent:
                await asyncio.gather(*sent)
                await responder.commit()

    opened.push_async_callback(_cancel, asyncio.create_task(answer()))
    ids = itertools.count()

    async def request() -> bytes:
        correlation_id = str(next(ids)).encode()
        headers = [("reply_to", replies_topic.encode()), ("correlation_id", correlation_id)]
        async with asyncio.timeout(TIMEOUT):
            await producer.send_and_wait(topic, BODY, headers=headers)
            while True:
                record = await replies.getone()
                if dict(record.headers).get("correlation_id") == correlation_id:
                    return record.value  # type: ignore[no-any-return]

    return request, opened.aclose


async def ours_serve(topic: str) -> tuple[Request, Start]:
    router = _router(fetch_max_wait_ms=REQUEST_FETCH_WAIT_MS)
    return await framework_responder(
        router.broker, router.subscriber(topic, group_id=topic), topic, router.broker.close
    )


def workloads() -> list[Workload]:
    return [
        Workload("Kafka", "consume -> validate -> ack", _three()),
        Workload("Kafka", "consume -> validate -> publish", _three(out=True)),
        Workload(
            "Kafka",
            "request -> reply round trip",
            # FastStream 0.7.8: "Kafka doesn't support `request` method without test client."
            request_replies({RAW: raw_serve, OURS: ours_serve}, _rpc_topic),
            unit="req/s",
            least=REQUESTS,
        ),
    ]
