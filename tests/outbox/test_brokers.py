"""The outbox on each real broker, and its publish options: ``key=`` is accepted on every
broker (the broker's record key on Kafka, only the outbox's order elsewhere: NATS
refuses a ``key`` option); options a transport declares are checked at write time, in
the caller's transaction; ``OutboxPublisher.mock`` under a test broker; Kafka: commit
=> sent with the same message id, order per key.

Databases: SQLite files (these tests are about brokers); every wait is bounded."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from fastapi_stream import Backoff, ConfigurationError, StreamMessage, StreamRouter
from fastapi_stream.memory.transport import MemoryTransport
from fastapi_stream.outbox import Outbox
from fastapi_stream.outbox.store import message_of, takes_key
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

URLS = {
    "redis": "redis://127.0.0.1:6379/0",
    "rabbit": "amqp://guest:guest@127.0.0.1:5672/",
    "nats": "nats://127.0.0.1:4222",
}


@pytest.fixture
async def sqlite(tmp_path: Path) -> Any:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    yield engine
    await engine.dispose()


def unique(prefix: str) -> str:
    return f"outbox-{prefix}-{uuid.uuid4().hex[:10]}"


def collect(router: StreamRouter, channel: str) -> list[StreamMessage]:
    got: list[StreamMessage] = []

    @router.subscriber(channel)
    async def handle(msg: StreamMessage) -> None:
        got.append(msg)

    return got


async def rows_left(engine: AsyncEngine, outbox: Outbox) -> tuple[int, int]:
    """(unsent, failed) rows."""
    table = outbox.table
    async with engine.connect() as conn:
        unsent = await conn.scalar(
            select(func.count()).select_from(table).where(table.c.sent_at.is_(None))
        )
    return int(unsent or 0), await outbox.failed_count()


@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbit", marks=pytest.mark.rabbit),
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("memory", marks=pytest.mark.memory),
    ],
)
async def test_a_keyed_outbox_publish_is_accepted_on_every_broker(
    broker: str, sqlite: AsyncEngine, memory_url: str
) -> None:
    """``key=`` orders the rows per key; on brokers without a record key it does not
    reach the broker as an option, so the broker gets what ``broker.publish(msg, ch)``
    would give it (NATS refuses a ``key`` option: every keyed row was refused before)."""
    router = StreamRouter(memory_url if broker == "memory" else URLS[broker])
    outbox = Outbox(router, sqlite, order="key", poll_interval=0.05, max_attempts=1)
    channel = unique(broker)
    got = collect(router, channel)
    async with router.broker:
        async with async_sessionmaker(sqlite)() as session, session.begin():
            ids = [await outbox.publish(session, i, channel, key=f"k{i % 2}") for i in range(6)]
        await eventually(lambda: len(got) == 6, f"6 messages on {broker}", timeout=15)
        await eventually(lambda: outbox.relay.sent_total == 6, "the rows marked sent")
        assert await rows_left(sqlite, outbox) == (0, 0)
    for key in ("k0", "k1"):
        mine = [m for m in got if m.decode() % 2 == int(key[1])]
        assert [m.decode() for m in mine] == [i for i in range(6) if i % 2 == int(key[1])]
    assert sorted(m.message_id for m in got) == sorted(str(i) for i in ids)
    if broker == "memory":  # it takes any option, as broker.publish there does
        assert {m.raw_message.options.get("key") for m in got} == {"k0", "k1"}


def test_which_transports_take_a_key() -> None:
    from fastapi_stream.kafka import KafkaRouter
    from fastapi_stream.nats import NatsRouter
    from fastapi_stream.rabbit import RabbitRouter
    from fastapi_stream.redis import RedisRouter

    assert takes_key(KafkaRouter("127.0.0.1:9092").broker.transport)
    assert takes_key(StreamRouter("memory://").broker.transport)
    for router in (
        RedisRouter(URLS["redis"]),
        RabbitRouter(URLS["rabbit"]),
        NatsRouter(URLS["nats"]),
    ):
        assert not takes_key(router.broker.transport)


class Declaring(MemoryTransport):
    """A transport that declares its publish options, as the broker transports do."""

    publish_options = frozenset({"priority"})


async def test_a_bad_option_raises_at_write_time_in_the_transaction(
    sqlite: AsyncEngine, memory_url: str
) -> None:
    router = StreamRouter(memory_url)
    router.broker.transport = Declaring(memory_url)
    outbox = Outbox(router, sqlite, relay=False)
    await outbox.create_table()
    with pytest.raises(ConfigurationError, match=r"unknown publish option\(s\) \['priorty'\]"):
        async with async_sessionmaker(sqlite)() as session, session.begin():
            await outbox.publish(session, "x", "ch", key="k", priorty=5)
    async with async_sessionmaker(sqlite)() as session, session.begin():
        await outbox.publish(session, "x", "ch", key="k", priority=3)  # a good one goes
    async with sqlite.connect() as conn:
        [row] = (await conn.execute(select(outbox.table))).all()
    assert message_of(row).options == {"priority": 3, "key": "k"}  # relayed with its key


async def test_outbox_publisher_mock_records_committed_publishes(
    sqlite: AsyncEngine, memory_url: str
) -> None:
    from fastapi_stream.testing import TestStreamBroker

    router = StreamRouter(memory_url)
    outbox = Outbox(router, sqlite, poll_interval=0.05)
    created = outbox.publisher("order-created")
    got = collect(router, "order-created")
    sessions = async_sessionmaker(sqlite)
    async with TestStreamBroker(router):
        with pytest.raises(RuntimeError):
            async with sessions() as session, session.begin():
                await created.publish(session, {"id": 1})
                assert created.mock.call_count == 0  # not before the commit
                raise RuntimeError("rolled back")
        async with sessions() as session, session.begin():
            await created.publish(session, {"id": 2}, key="2")
        # At once after the commit, before the relay sent it.
        created.mock.assert_called_once_with({"id": 2})
        await eventually(lambda: got, "the relayed message")
        assert [m.decode() for m in got] == [{"id": 2}]
        async with sqlite.begin() as conn:  # an AsyncConnection: recorded at the write
            await created.publish(conn, "text")
        assert created.mock.call_count == 2
    assert created.mock.call_count == 0  # reset when the test broker exits
    async with router.broker, sessions() as session, session.begin():  # no test broker
        await created.publish(session, {"id": 3})
    assert created.mock.call_count == 0


@pytest.mark.kafka
async def test_relay_on_real_kafka_same_id_and_order_per_key(sqlite: AsyncEngine) -> None:
    from aiokafka import AIOKafkaConsumer

    from fastapi_stream.kafka import KafkaRouter, KafkaTopic

    servers = "127.0.0.1:9092"
    topic = f"kt.outbox.{uuid.uuid4().hex[:10]}"
    router = KafkaRouter(
        servers,
        topics=[KafkaTopic(topic, partitions=3)],
        session_timeout_ms=1000,
        heartbeat_interval_ms=250,
        reconnect=Backoff(first=0.05, cap=0.5),
    )
    outbox = Outbox(router, sqlite, order="key", poll_interval=0.05, batch_size=7)
    sessions = async_sessionmaker(sqlite)
    written: list[tuple[str | None, str, int]] = []
    async with router.broker:
        with pytest.raises(RuntimeError):
            async with sessions() as session, session.begin():
                await outbox.publish(session, -1, topic, key="k0")
                raise RuntimeError("rolled back: never sent")
        for i in range(30):
            async with sessions() as session, session.begin():
                key = f"k{i % 4}"
                written.append((await outbox.publish(session, i, topic, key=key), key, i))
        await eventually(lambda: outbox.relay.sent_total == 30, "30 rows sent", timeout=30)
        assert await rows_left(sqlite, outbox) == (0, 0)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(20):
            while len(records) < 30:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    assert len(records) == 30
    by_id = {message_id: (key, value) for message_id, key, value in written}
    seen: dict[str, list[int]] = {}
    partitions: dict[str, set[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        headers = dict(record.headers)
        message_id = headers["message_id"].decode()
        key, value = by_id[message_id]  # the id given at write time
        assert record.key == key.encode()  # the outbox key is Kafka's record key
        assert int(record.value) == value
        seen.setdefault(key, []).append(value)
        partitions.setdefault(key, set()).add(record.partition)
    for key, values in seen.items():
        assert values == [v for _, k, v in written if k == key]  # order per key
        assert len(partitions[key]) == 1


async def test_a_key_declared_with_the_publisher_is_a_default(
    sqlite: AsyncEngine, memory_url: str
) -> None:
    router = StreamRouter(memory_url)
    outbox = Outbox(router, sqlite, order="key", poll_interval=0.05)
    tenants = outbox.publisher("tenants", key="tenant-1")
    got = collect(router, "tenants")
    async with router.broker:
        async with async_sessionmaker(sqlite)() as session, session.begin():
            await tenants.publish(session, "declared")
            await tenants.publish(session, "given", key="tenant-2")
        await eventually(lambda: len(got) == 2, "both messages")
    assert {m.decode(): m.raw_message.options["key"] for m in got} == {
        "declared": "tenant-1",
        "given": "tenant-2",
    }
    async with sqlite.connect() as conn:
        partitions = set((await conn.execute(select(outbox.table.c.partition))).scalars())
    assert partitions == {"tenants\x1ftenant-1", "tenants\x1ftenant-2"}
