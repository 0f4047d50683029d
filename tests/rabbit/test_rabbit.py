"""RabbitMQ-specific behaviour on the real broker: publish options, mandatory publishes,
declare=False, dead-lettering, quorum delivery counts, request/reply under concurrency,
reconnects and outages, and credentials kept out of errors and health output."""

from __future__ import annotations

import asyncio
import time
import traceback
from typing import Any

import aio_pika
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_stream import (
    ConfigurationError,
    PublishError,
    Retry,
    StreamMessage,
    StreamRouter,
    TransportError,
)
from fastapi_stream.rabbit import (
    ExchangeType,
    QueueType,
    RabbitExchange,
    RabbitQueue,
    RabbitTransport,
)
from fastapi_stream.testing import TestStreamBroker
from tests.faults.proxy import Proxy

from .conftest import (
    close_connections_named,
    connections_named,
    eventually,
    router,
)

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]

FAST_RETRY = Retry(max_attempts=3, backoff=0.01, jitter=0)


async def test_amqp_url_picks_the_rabbit_transport_and_hides_the_password() -> None:
    stream = StreamRouter("amqp://guest:guest@127.0.0.1:5672/")
    assert isinstance(stream.broker.transport, RabbitTransport)
    assert stream.broker.transport.describe() == "amqp://guest:***@127.0.0.1:5672/"


async def test_publish_options_reach_the_message(uid: str) -> None:
    rabbit = router(uid)
    received: list[StreamMessage] = []

    @rabbit.subscriber(RabbitQueue(f"test.{uid}.props", durable=False, auto_delete=True))
    async def handle(msg: StreamMessage) -> None:
        received.append(msg)

    async with rabbit.broker as broker:
        await broker.publish(
            {"id": 1},
            f"test.{uid}.props",
            headers={"x-tenant": "acme"},
            correlation_id="corr-1",
            message_id="msg-1",
            priority=5,
            expiration=30,
            message_type="order.created",
            persist=False,
        )
        await eventually(lambda: received, "message")

    msg = received[0]
    assert (msg.message_id, msg.correlation_id, msg.content_type) == (
        "msg-1",
        "corr-1",
        "application/json",
    )
    assert msg.headers == {"x-tenant": "acme"}
    assert msg.delivery_attempt is None  # classic queues keep no count
    raw = msg.raw_message
    assert (raw.priority, raw.type, raw.expiration) == (5, "order.created", 30)
    assert raw.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT


async def test_unroutable_publish_raises_unless_not_mandatory(uid: str) -> None:
    async with router(uid).broker as broker:
        started = time.monotonic()
        with pytest.raises(PublishError, match="no queue is bound"):
            await broker.publish("lost", f"test.{uid}.nowhere")
        await broker.publish("dropped", f"test.{uid}.nowhere", mandatory=False)
        assert time.monotonic() - started < 2


async def test_declare_false_needs_the_queue(uid: str, admin: aio_pika.abc.AbstractChannel) -> None:
    name = f"test.{uid}.existing"
    missing = router(uid)

    @missing.subscriber(RabbitQueue(name, declare=False))
    async def handle(text: str) -> None: ...

    with pytest.raises(ConfigurationError, match=f"queue '{name}' does not exist"):
        await missing.broker.start()
    await missing.broker.close()

    await admin.declare_queue(name, auto_delete=True)
    existing = router(uid)
    received: list[str] = []

    @existing.subscriber(RabbitQueue(name, declare=False))
    async def handle_existing(text: str) -> None:
        received.append(text)

    async with existing.broker as broker:
        await broker.publish("hello", name)
        await eventually(lambda: received == ["hello"], "the message")


async def test_reject_goes_to_the_dead_letter_exchange(uid: str) -> None:
    dlx = RabbitExchange(
        f"test.dlx.{uid}", type=ExchangeType.FANOUT, durable=False, auto_delete=True
    )
    rabbit = router(uid)
    dead: list[StreamMessage] = []
    work = RabbitQueue(
        f"test.{uid}.work",
        durable=False,
        auto_delete=True,
        arguments={"x-dead-letter-exchange": dlx.name},
    )

    @rabbit.subscriber(RabbitQueue(f"test.{uid}.dead", durable=False, auto_delete=True), dlx)
    async def on_dead(msg: StreamMessage) -> None:
        dead.append(msg)

    @rabbit.subscriber(work, retry=False)
    async def fail(text: str) -> None:
        raise RuntimeError("no")

    async with rabbit.broker as broker:
        await broker.publish("poison", work.name, message_id="m-1")
        await eventually(lambda: dead, "a dead letter")

    assert dead[0].decode() == "poison"
    assert dead[0].message_id == "m-1"
    (death,) = dead[0].raw_message.headers["x-death"]
    assert death["reason"] == "rejected"


async def test_quorum_queue_counts_deliveries_then_dead_letters(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    dlx = RabbitExchange(
        f"test.dlx.{uid}", type=ExchangeType.FANOUT, durable=False, auto_delete=True
    )
    orders = RabbitQueue(
        f"test.{uid}.quorum",
        queue_type=QueueType.QUORUM,
        arguments={"x-dead-letter-exchange": dlx.name},
    )
    rabbit = router(uid)
    attempts: list[int | None] = []
    dead: list[StreamMessage] = []

    @rabbit.subscriber(orders, retry=FAST_RETRY)
    async def fail(msg: StreamMessage) -> None:
        attempts.append(msg.delivery_attempt)
        raise RuntimeError("declined")

    @rabbit.subscriber(RabbitQueue(f"test.{uid}.dead", durable=False, auto_delete=True), dlx)
    async def on_dead(msg: StreamMessage) -> None:
        dead.append(msg)

    try:
        async with rabbit.broker as broker:
            await broker.publish("charge", orders.name)
            await eventually(lambda: dead, "a dead letter")
            await asyncio.sleep(0.2)
    finally:
        await admin.queue_delete(orders.name)

    # The broker's own count (x-delivery-count), so it holds across consumers.
    assert attempts == [1, 2, 3]
    assert len(dead) == 1


async def test_quorum_delivery_limit_dead_letters_on_the_broker(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    dlx = RabbitExchange(
        f"test.dlx.{uid}", type=ExchangeType.FANOUT, durable=False, auto_delete=True
    )
    orders = RabbitQueue(
        f"test.{uid}.limited",
        queue_type=QueueType.QUORUM,
        arguments={"x-dead-letter-exchange": dlx.name, "x-delivery-limit": 1},
    )
    rabbit = router(uid)
    attempts: list[int | None] = []
    dead: list[str] = []

    @rabbit.subscriber(orders, retry=Retry(max_attempts=10, backoff=0.01))
    async def fail(msg: StreamMessage) -> None:
        attempts.append(msg.delivery_attempt)
        raise RuntimeError("declined")

    @rabbit.subscriber(RabbitQueue(f"test.{uid}.dead", durable=False, auto_delete=True), dlx)
    async def on_dead(text: str) -> None:
        dead.append(text)

    try:
        async with rabbit.broker as broker:
            await broker.publish("charge", orders.name)
            await eventually(lambda: dead, "a dead letter")
            await asyncio.sleep(0.2)
    finally:
        await admin.queue_delete(orders.name)

    assert attempts == [1, 2]  # the limit counts redeliveries
    assert dead == ["charge"]


async def test_nack_with_delay_keeps_the_consumer_going(uid: str) -> None:
    rabbit = router(uid)
    seen: list[tuple[str, float]] = []
    name = f"test.{uid}.delayed"

    @rabbit.subscriber(RabbitQueue(name, durable=False, auto_delete=True))
    async def handle(text: str, msg: StreamMessage) -> None:
        seen.append((text, time.monotonic()))
        if text == "later" and len(seen) == 1:
            await msg.nack(delay=0.5)

    async with rabbit.broker as broker:
        started = time.monotonic()
        await broker.publish("later", name)
        await broker.publish("now", name)
        await eventually(lambda: len(seen) >= 3, "the redelivery")

    texts = [text for text, _ in seen]
    assert texts == ["later", "now", "later"]
    assert seen[1][1] - started < 0.4  # not held up behind the delayed nack
    assert seen[2][1] - started >= 0.5


async def test_concurrent_requests_are_not_serialised(uid: str) -> None:
    rabbit = router(uid)
    name = f"test.{uid}.slow-double"

    @rabbit.subscriber(RabbitQueue(name, durable=False, auto_delete=True), max_workers=20)
    async def double(n: int) -> int:
        await asyncio.sleep(0.3)
        return 2 * n

    async with rabbit.broker as broker:
        await broker.request(0, name, timeout=5)  # sets up the reply consumer
        await asyncio.sleep(0.05)  # the client's per-delivery tasks finish
        tasks_before = len(asyncio.all_tasks())
        started = time.monotonic()
        replies = await asyncio.gather(*(broker.request(n, name, timeout=5) for n in range(20)))
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.05)
        assert len(asyncio.all_tasks()) == tasks_before

    assert [reply.decode() for reply in replies] == [2 * n for n in range(20)]
    assert elapsed < 1.5, f"20 requests of 0.3 s took {elapsed:.2f}s: serialised?"


async def test_stop_hands_prefetched_messages_back(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    """broker.stop() without close: what the stopped consumer had prefetched but never
    handled goes back to the queue for the next consumer."""
    name = f"test.{uid}.handover"
    queue = RabbitQueue(name, durable=False, arguments={"x-expires": 30_000})
    first = router(uid)
    started: list[int] = []

    @first.subscriber(queue)
    async def slow(n: int) -> None:
        started.append(n)
        await asyncio.sleep(0.2)

    second = router(uid)
    later: list[int] = []

    @second.subscriber(queue)
    async def fast(n: int) -> None:
        later.append(n)

    async with first.broker as broker:
        for n in range(10):
            await broker.publish(n, name)
        await eventually(lambda: started, "the first message")
        await broker.stop()  # the connection stays open
        async with second.broker:
            await eventually(lambda: len(started) + len(later) >= 10, "the rest")
    await admin.queue_delete(name)
    assert sorted(started + later) == list(range(10))


async def test_consumer_comes_back_after_the_server_closes_the_connection(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    """FastStream #2758: after RabbitMQ drops the connection, the queue is there but the
    consumer was not. Here the consumer is restored and no message is lost."""
    rabbit = router(uid, reconnect_interval=0.2, publish_timeout=1.0)
    name = f"test.{uid}.survivor"
    received: list[int] = []

    @rabbit.subscriber(RabbitQueue(name, durable=False, arguments={"x-expires": 30_000}))
    async def handle(n: int) -> None:
        received.append(n)

    count = 60
    closed: list[str] = []
    try:
        async with rabbit.broker as broker:
            for n in range(count):
                if n == count // 3:
                    closed = await close_connections_named(uid)
                await publish_with_retry(broker, n, name)
            await eventually(lambda: set(received) >= set(range(count)), "every message")
            assert await broker.ping(2.0)
            reconnected = await connections_named(uid)
    finally:
        await admin.queue_delete(name)
    assert len(closed) == 1 and len(reconnected) == 1 and reconnected != closed
    assert set(received) == set(range(count))  # redeliveries may repeat some: at-least-once


async def publish_with_retry(broker: Any, body: Any, routing_key: str) -> None:
    """Publish at-least-once across an outage: a failed publish is retried (bounded)."""
    for _ in range(50):
        try:
            await broker.publish(body, routing_key)
            return
        except PublishError:
            await asyncio.sleep(0.1)
    pytest.fail(f"could not publish {body!r} within the retries")


async def test_publish_during_an_outage_raises_in_time_then_recovers(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    proxy = Proxy(("127.0.0.1", 5672))
    await proxy.start()
    transport = RabbitTransport(
        f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
        reconnect_interval=0.2,
        publish_timeout=0.5,
        connection_name=f"fastapi-stream test {uid}",
    )
    stream = StreamRouter(transport)
    name = f"test.{uid}.outage"
    received: list[str] = []

    @stream.subscriber(name)
    async def handle(text: str) -> None:
        received.append(text)

    try:
        async with stream.broker as broker:
            await broker.publish("before", name)
            await eventually(lambda: received == ["before"], "the first message")
            await proxy.stop()
            started = time.monotonic()
            with pytest.raises(PublishError):
                await broker.publish("during", name)
            assert time.monotonic() - started < 1.5
            assert not await broker.ping(0.3)
            await proxy.start()
            await publish_with_retry(broker, "after", name)
            await eventually(lambda: "after" in received, "a message after the outage")
    finally:
        await proxy.stop()
        await admin.queue_delete(name)


async def test_unreachable_broker_fails_clearly_without_credentials() -> None:
    rabbit = StreamRouter("amqp://guest:s3cret-pw@127.0.0.1:1/", fail_fast=True)
    with pytest.raises(TransportError) as error:
        await rabbit.broker.start()
    await rabbit.broker.close()
    assert "127.0.0.1:1" in str(error.value)
    assert "s3cret-pw" not in str(error.value)
    # Not chained: a client exception could carry the URL with its password.
    assert "s3cret-pw" not in "".join(traceback.format_exception(error.value))


async def test_wrong_password_fails_clearly_without_credentials() -> None:
    rabbit = StreamRouter("amqp://guest:wrong-s3cret@127.0.0.1:5672/", fail_fast=True)
    with pytest.raises(TransportError) as error:
        await rabbit.broker.start()
    await rabbit.broker.close()
    assert "wrong-s3cret" not in "".join(traceback.format_exception(error.value))


def test_health_output_hides_the_password(uid: str) -> None:
    rabbit = router(uid)
    app = FastAPI()
    app.include_router(rabbit)
    with TestClient(app) as client:
        response = client.get("/health/ready")
    assert response.status_code == 200
    assert "guest:guest" not in response.text
    assert "guest:***@127.0.0.1:5672" in response.text


async def test_with_real_runs_the_test_against_rabbitmq(uid: str) -> None:
    rabbit = router(uid)
    name = f"test.{uid}.real"

    @rabbit.subscriber(RabbitQueue(name, durable=False, auto_delete=True))
    async def handle(order: dict[str, int]) -> None: ...

    async with TestStreamBroker(rabbit, with_real=True) as broker:
        await broker.publish({"id": 1}, name)
        await handle.wait_call(5)
        handle.mock.assert_called_once_with({"id": 1})
