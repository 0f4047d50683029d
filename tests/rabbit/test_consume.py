"""RabbitMQ under the core's consume loop, on the real broker: settlements in bulk
(``multiple=True`` acks beside messages still unsettled), results published together
with their confirms before the acks, and a consumer that comes back on its own."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from typing import Any

import aio_pika
import pytest

from fastapi_stream import Backoff, ConfigurationError, PublishError, StreamMessage
from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.rabbit import RabbitQueue, RabbitRouter, RabbitTransport
from tests.faults.proxy import Proxy

from .conftest import URL, eventually, router

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]


async def _depth(admin: aio_pika.abc.AbstractChannel, name: str) -> int:
    declared = await admin.declare_queue(name, passive=True)
    return declared.declaration_result.message_count or 0


async def test_workers_settle_every_message_exactly_once(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    """Workers finish out of order and one message waits for a delayed redelivery: each
    message is acked once (a tag acked twice would close the channel and redeliver)."""
    name = f"test.{uid}.workers"
    rabbit = router(uid)
    seen: Counter[int] = Counter()

    @rabbit.subscriber(RabbitQueue(name, arguments={"x-expires": 30_000}), max_workers=5)
    async def handle(n: int, msg: StreamMessage) -> None:
        seen[n] += 1
        await asyncio.sleep(random.uniform(0, 0.02))
        if n == 3 and seen[n] == 1:
            await msg.nack(delay=0.3)

    try:
        async with rabbit.broker as broker:
            for n in range(40):
                await broker.publish(n, name)
            await eventually(lambda: sum(seen.values()) >= 41, "every message and the retry")
            await asyncio.sleep(0.3)
        # Closed: anything left unacknowledged would be back in the queue.
        assert await _depth(admin, name) == 0
    finally:
        await admin.queue_delete(name)
    assert seen == Counter({**dict.fromkeys(range(40), 1), 3: 2})


async def test_results_are_confirmed_before_the_message_is_acked(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    """A result RabbitMQ returns (no queue bound yet) is not confirmed: the message it
    answers is not acked but handled again, and its result then goes out."""
    name, out = f"test.{uid}.in", f"test.{uid}.out"
    rabbit = router(uid)
    handled: list[int] = []

    @rabbit.subscriber(RabbitQueue(name, durable=False, auto_delete=True))
    @rabbit.publisher(out)
    async def handle(n: int) -> int:
        handled.append(n)
        return n * 10

    try:
        async with rabbit.broker as broker:
            await broker.publish(1, name)
            await eventually(lambda: handled, "the first delivery")
            results = await admin.declare_queue(out, arguments={"x-expires": 30_000})
            await eventually(lambda: len(handled) >= 2, "the message handled again", 5)
            message = await results.get(timeout=5)
            assert message.body == b"10"
    finally:
        await admin.queue_delete(out)
    assert handled == [1, 1]


async def test_publish_many_confirms_all_and_names_what_failed(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    name = f"test.{uid}.many"
    await admin.declare_queue(name, arguments={"x-expires": 30_000})
    transport = RabbitTransport(URL, connection_name=f"fastapi-stream test {uid}")
    await transport.connect()
    try:
        await transport.publish_many([OutgoingMessage(name, str(n).encode()) for n in range(50)])
        await eventually(lambda: _depth(admin, name), "the messages")
        assert await _depth(admin, name) == 50
        with pytest.raises(PublishError, match=r"1 of 3 messages not sent: no queue is bound"):
            await transport.publish_many(
                [
                    OutgoingMessage(name, b"a"),
                    OutgoingMessage(f"test.{uid}.nowhere", b"lost"),
                    OutgoingMessage(name, b"b"),
                ]
            )
        assert await _depth(admin, name) == 52  # the others were sent and confirmed
    finally:
        await transport.close()
        await admin.queue_delete(name)


async def test_a_queue_declared_otherwise_is_a_configuration_error(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    """Retrying cannot fix a queue RabbitMQ has with other arguments: a clear error,
    not an app waiting for a broker that is there."""
    name = f"test.{uid}.other"
    await admin.declare_queue(name, durable=False, auto_delete=True)
    rabbit = router(uid)

    @rabbit.subscriber(RabbitQueue(name))  # durable
    async def handle(text: str) -> None: ...

    try:
        with pytest.raises(ConfigurationError, match="inequivalent arg 'durable'"):
            await rabbit.broker.start()
    finally:
        await rabbit.broker.close()
        await admin.queue_delete(name)


async def test_consumer_comes_back_after_its_queue_is_deleted(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    """RabbitMQ cancels the consumer of a deleted queue; the subscription declares it
    again and goes on consuming, with no restart."""
    name = f"test.{uid}.deleted"
    rabbit = router(uid)
    received: list[str] = []

    @rabbit.subscriber(RabbitQueue(name, arguments={"x-expires": 30_000}))
    async def handle(text: str) -> None:
        received.append(text)

    try:
        async with rabbit.broker as broker:
            await broker.publish("before", name)
            await eventually(lambda: received == ["before"], "the first message")
            await admin.queue_delete(name)

            async def delivered_again() -> bool:
                try:
                    await broker.publish("after", name)
                except PublishError:
                    return False  # not declared again yet
                await asyncio.sleep(0.2)
                return "after" in received

            await eventually(delivered_again, "a message after the queue came back", 10)
    finally:
        await admin.queue_delete(name)


def _through(proxy: Proxy, uid: str, **options: Any) -> RabbitRouter:
    """A router whose connection goes through ``proxy``."""
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    return RabbitRouter(url, connection_name=f"fastapi-stream test {uid}", **options)


async def test_consuming_resumes_when_the_channel_is_back_not_at_the_next_backoff(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    """The connection cut for 2 s (a proxy in front of RabbitMQ): aio-pika reconnects by
    itself, and the subscription consumes again once its channel is back. It used to raise
    after a second, so the core's backoff (6 s here, up to 5 s by default) came on top of
    aio-pika's retries, and consuming resumed only at the core's next attempt (fault case
    F1 recovered in 14-20 s in 3 runs of 5)."""
    name = f"test.{uid}.outage"
    proxy = Proxy(("127.0.0.1", 5672))
    await proxy.start()
    rabbit = _through(proxy, uid, reconnect=Backoff(first=6.0, cap=6.0, jitter=0.0))
    received: list[str] = []

    @rabbit.subscriber(RabbitQueue(name, arguments={"x-expires": 30_000}))
    async def handle(text: str) -> None:
        received.append(text)

    loop = asyncio.get_running_loop()
    try:
        async with rabbit.broker as broker:
            await broker.publish("before", name)
            await eventually(lambda: received == ["before"], "the first message")
            await proxy.stop()
            await asyncio.sleep(2.0)
            await proxy.start()
            back = loop.time()
            await _handled_after(admin, name, received)
            resumed = loop.time() - back
    finally:
        await proxy.stop()
        await admin.queue_delete(name)
    assert resumed < 3.5, f"consuming resumed {resumed:.1f} s after the connection was back"


async def test_a_reconnect_attempt_that_is_never_answered_is_given_up(
    uid: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    """After a cut, the first reconnect finds a listener that accepts and never answers
    (a broker still booting, or a half-dead host). That attempt ends after
    ``connect_timeout``, and the next one, through the proxy again, resumes consuming.
    aio-pika bounds its reconnects only when told: before, the attempt waited forever."""
    name = f"test.{uid}.silent"
    proxy = Proxy(("127.0.0.1", 5672))
    await proxy.start()
    rabbit = _through(proxy, uid, connect_timeout=2.0)
    received: list[str] = []

    @rabbit.subscriber(RabbitQueue(name, arguments={"x-expires": 30_000}))
    async def handle(text: str) -> None:
        received.append(text)

    silent: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # accepted, never answered, never closed

    try:
        async with rabbit.broker as broker:
            await broker.publish("before", name)
            await eventually(lambda: received == ["before"], "the first message")
            await proxy.stop()
            listener = await asyncio.start_server(hold, "127.0.0.1", proxy.port)
            await eventually(lambda: silent, "a reconnect attempt on the silent listener", 5)
            listener.close()
            await proxy.start()
            message = aio_pika.Message(b'"after"', content_type="application/json")
            await admin.default_exchange.publish(message, routing_key=name)
            await eventually(lambda: "after" in received, "the message after the cut", 10)
    finally:
        for writer in silent:
            writer.transport.abort()
        await proxy.stop()
        await admin.queue_delete(name)


async def test_a_connection_that_goes_silent_is_noticed_within_two_heartbeats(
    uid: str, admin: aio_pika.abc.AbstractChannel, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy black-holes the connection: what either side sends is dropped, nothing
    is closed. The watchdog gets no answer within a heartbeat (2 s here), closes the
    connection, and aio-pika reconnects through the proxy. aiormq alone noticed only
    after 3 x (heartbeat + 1) = 9 s (fault case F10)."""
    name = f"test.{uid}.hole"
    proxy = Proxy(("127.0.0.1", 5672))
    await proxy.start()
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/?heartbeat=2"
    rabbit = RabbitRouter(url, connection_name=f"fastapi-stream test {uid}")
    received: list[str] = []

    @rabbit.subscriber(RabbitQueue(name, arguments={"x-expires": 30_000}))
    async def handle(text: str) -> None:
        received.append(text)

    caplog.set_level(logging.WARNING, "fastapi_stream.rabbit")
    try:
        async with rabbit.broker as broker:
            await broker.publish("before", name)
            await eventually(lambda: received == ["before"], "the first message")
            holed = time.time()
            assert proxy.blackhole() > 0
            await _handled_after(admin, name, received)
            resumed = time.time() - holed
    finally:
        await proxy.stop()
        await admin.queue_delete(name)
    noticed = [r.created - holed for r in caplog.records if "did not answer" in r.getMessage()]
    assert noticed, "the silent connection was never noticed"
    assert noticed[0] < 4.0, f"noticed after {noticed[0]:.1f} s"
    assert resumed < 8.0, f"consuming resumed {resumed:.1f} s after the hole"


def test_a_heartbeat_that_is_no_number_fails_at_startup() -> None:
    with pytest.raises(ConfigurationError, match="heartbeat='often'"):
        RabbitTransport("amqp://guest:guest@localhost/?heartbeat=often")
    assert RabbitTransport("amqp://localhost/?heartbeat=0").heartbeat == 0
    assert RabbitTransport("amqp://localhost/").heartbeat == 20


async def _handled_after(
    admin: aio_pika.abc.AbstractChannel, name: str, received: list[str]
) -> None:
    """Publishes "after" to queue ``name`` directly and waits until it is handled."""
    message = aio_pika.Message(b'"after"', content_type="application/json")
    await admin.default_exchange.publish(message, routing_key=name)
    await eventually(lambda: "after" in received, "the message after the fault", 15)
