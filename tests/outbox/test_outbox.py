"""The outbox and the inbox in one process, on SQLite and on PostgreSQL, with the
memory broker: rollback, commit, ids, order, readiness, pruning, the inbox's once."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from fastapi_stream import Retry, StreamMessage, StreamRouter
from fastapi_stream.outbox import Inbox, Outbox, ddl
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

metadata = MetaData()
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("note", String(100)),
)


def received_on(router: StreamRouter, channel: str) -> list[StreamMessage]:
    got: list[StreamMessage] = []

    @router.subscriber(channel)
    async def collect(msg: StreamMessage) -> None:
        got.append(msg)

    return got


async def unsent(outbox: Outbox) -> int:
    table = outbox.table
    async with outbox.engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(table).where(table.c.sent_at.is_(None))
        )
    return int(count or 0)


async def test_rollback_sends_nothing_commit_sends_with_the_same_id(
    engine: AsyncEngine, memory_url: str
) -> None:
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, poll_interval=0.05)
    got = received_on(router, "orders")
    sessions = async_sessionmaker(engine)
    async with router.broker:
        with pytest.raises(RuntimeError):
            async with sessions() as session, session.begin():
                await outbox.publish(session, {"id": 1}, "orders")
                raise RuntimeError("the handler failed after writing")
        async with sessions() as session, session.begin():
            sent_id = await outbox.publish(session, {"id": 2}, "orders", headers={"v": "1"})
        await eventually(lambda: got, "the committed message")
        await eventually(lambda: outbox.relay.sent_total == 1, "the row marked sent")
        assert await unsent(outbox) == 0
    assert [m.decode() for m in got] == [{"id": 2}]
    assert got[0].message_id == sent_id
    assert got[0].headers["v"] == "1"


async def test_order_is_kept_per_channel(engine: AsyncEngine, memory_url: str) -> None:
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, batch_size=7, poll_interval=0.05)
    a = received_on(router, "a")
    b = received_on(router, "b")
    sessions = async_sessionmaker(engine)
    async with sessions() as session, session.begin():  # before the relay runs
        for i in range(30):
            await outbox.publish(session, i, "a" if i % 3 else "b")
    async with router.broker:
        await eventually(lambda: len(a) + len(b) == 30, "30 messages", timeout=10)
    assert [m.decode() for m in a] == [i for i in range(30) if i % 3]
    assert [m.decode() for m in b] == [i for i in range(30) if not i % 3]


async def test_sent_rows_are_pruned(engine: AsyncEngine, memory_url: str) -> None:
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, poll_interval=0.05, keep_sent=0.05, prune_interval=0.05)
    got = received_on(router, "pruned")
    sessions = async_sessionmaker(engine)
    table = outbox.table

    async def none_left() -> bool:
        async with engine.connect() as conn:
            return await conn.scalar(select(func.count()).select_from(table)) == 0

    async with router.broker:
        async with sessions() as session, session.begin():
            await outbox.publish(session, "x", "pruned")
        await eventually(lambda: got, "the message")
        await eventually(none_left, "the sent row pruned", timeout=10)


async def test_keep_sent_zero_deletes_at_once(engine: AsyncEngine, memory_url: str) -> None:
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, poll_interval=0.05, keep_sent=0)
    got = received_on(router, "gone")
    async with router.broker:
        async with async_sessionmaker(engine)() as session, session.begin():
            await outbox.publish(session, "x", "gone")
        await eventually(lambda: got, "the message")
        await eventually(lambda: outbox.relay.sent_total == 1, "the relay's count")
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(outbox.table)) == 0


def test_readiness_reports_the_relay(db_url: str, memory_url: str) -> None:
    # The app runs in TestClient's event loop: connections must not outlive it.
    engine = create_async_engine(db_url, poolclass=NullPool)
    router = StreamRouter(memory_url)
    Outbox(router, engine, table="ready_outbox", poll_interval=0.05)
    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        response = client.get("/health/ready")
    assert response.status_code == 200, response.text
    check = response.json()["brokers"][0]["checks"]["outbox:ready_outbox"]
    assert check["ready"] is True
    assert check["running"] is True
    assert check["lag_seconds"] == 0


async def test_the_ddl_makes_a_table_the_outbox_uses(engine: AsyncEngine, memory_url: str) -> None:
    dialect = engine.dialect.name
    async with engine.begin() as conn:
        for statement in ddl(dialect, outbox="migrated", inbox="migrated_inbox").split(";"):
            if statement.strip():
                await conn.exec_driver_sql(statement)
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, table="migrated", create_table=False, poll_interval=0.05)
    got = received_on(router, "m")
    async with router.broker:
        async with async_sessionmaker(engine)() as session, session.begin():
            await outbox.publish(session, "hello", "m")
        await eventually(lambda: got, "the message")


async def test_inbox_runs_the_handler_once_per_message_id(
    engine: AsyncEngine, memory_url: str
) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    router = StreamRouter(memory_url)
    inbox = Inbox(engine)
    calls: list[str] = []

    @router.subscriber("payments", middlewares=[inbox])
    async def pay(note: str, session: AsyncSession = Depends(inbox.session)) -> None:
        calls.append(note)
        await session.execute(insert(effects).values(note=note))

    async with router.broker:
        for _ in range(3):  # the same message, delivered three times
            await router.broker.publish("paid", "payments", message_id="m-1")
        await router.broker.publish("other", "payments", message_id="m-2")
        await eventually(lambda: len(calls) == 2 and inbox.skipped == 2, "two runs, two skips")
    async with engine.connect() as conn:
        notes = (await conn.execute(select(effects.c.note).order_by(effects.c.id))).scalars()
        assert list(notes) == ["paid", "other"]


async def test_a_failed_attempt_records_nothing(engine: AsyncEngine, memory_url: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    router = StreamRouter(memory_url)
    inbox = Inbox(engine)
    attempts: list[int] = []

    @router.subscriber("flaky", middlewares=[inbox], retry=Retry(max_attempts=3, backoff=0.01))
    async def flaky(note: str, session: AsyncSession = Depends(inbox.session)) -> None:
        attempts.append(1)
        await session.execute(insert(effects).values(note=f"{note}-{len(attempts)}"))
        if len(attempts) < 2:
            raise RuntimeError("first attempt fails after writing")

    async with router.broker:
        await router.broker.publish("n", "flaky", message_id="f-1")
        await eventually(lambda: len(attempts) == 2, "the retry")
        await router.broker.publish("n", "flaky", message_id="f-1")  # redelivered later
        await eventually(lambda: inbox.skipped == 1, "the duplicate skipped")
    assert len(attempts) == 2
    async with engine.connect() as conn:
        assert list((await conn.execute(select(effects.c.note))).scalars()) == ["n-2"]


def test_outbox_channels_are_in_the_asyncapi_document(sqlite_url: str, memory_url: str) -> None:
    engine = create_async_engine(sqlite_url, poolclass=NullPool)
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine)
    outbox.publisher("order-created", title="An order was stored", description="Once per order")
    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        document = client.get("/asyncapi.json").json()
    sends = [op for op in document["operations"].values() if op["action"] == "send"]
    assert [op["title"] for op in sends] == ["An order was stored"]
    assert any(ch["address"] == "order-created" for ch in document["channels"].values())


async def test_metrics_count_sent_rows_and_lag(engine: AsyncEngine, memory_url: str) -> None:
    from prometheus_client import CollectorRegistry

    from fastapi_stream.outbox import PrometheusOutboxMetrics

    registry = CollectorRegistry()
    router = StreamRouter(memory_url)
    outbox = Outbox(
        router, engine, poll_interval=0.05, metrics=PrometheusOutboxMetrics(registry=registry)
    )
    got = received_on(router, "metered")
    async with router.broker:
        async with async_sessionmaker(engine)() as session, session.begin():
            for i in range(3):
                await outbox.publish(session, i, "metered")
        await eventually(lambda: len(got) == 3, "three messages")
        await eventually(
            lambda: registry.get_sample_value("fastapi_stream_outbox_lag_seconds") is not None,
            "a lag sample",
        )
    sent = registry.get_sample_value(
        "fastapi_stream_outbox_sent_messages_total", {"destination": "metered"}
    )
    assert sent == 3
    lag = registry.get_sample_value("fastapi_stream_outbox_lag_seconds")
    assert lag is not None and 0 <= lag < 5


@pytest.mark.postgres
async def test_a_notify_from_another_writer_wakes_the_relay(pg_url: str, memory_url: str) -> None:
    engine = create_async_engine(pg_url)
    try:
        router = StreamRouter(memory_url)
        relaying = Outbox(router, engine, poll_interval=30)  # polls far too seldom
        writer = Outbox(router, engine, relay=False)  # as another process would
        got = received_on(router, "woken")
        async with router.broker:
            await eventually(lambda: relaying.relay._listener is not None, "LISTEN set up")
            async with async_sessionmaker(engine)() as session, session.begin():
                await writer.publish(session, "hi", "woken")
            await eventually(lambda: got, "the message, woken by NOTIFY", timeout=5)
    finally:
        await engine.dispose()


async def test_the_test_broker_runs_handlers_of_outbox_messages(
    engine: AsyncEngine, memory_url: str
) -> None:
    from fastapi_stream.testing import TestStreamBroker

    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, poll_interval=0.05)

    @router.subscriber("tested")
    async def handle(value: int) -> None:
        pass

    async with TestStreamBroker(router):
        async with async_sessionmaker(engine)() as session, session.begin():
            await outbox.publish(session, 5, "tested")
        await eventually(lambda: handle.mock.call_count == 1, "the handler's call")
        handle.mock.assert_called_once_with(5)


def test_the_outbox_package_is_broker_free_and_its_api_listed() -> None:
    import ast
    from pathlib import Path

    import fastapi_stream.outbox as package

    assert list(package.__all__) == sorted(package.__all__)
    assert all(hasattr(package, name) for name in package.__all__)
    brokers = ("aiokafka", "aio_pika", "nats", "redis", "aiomqtt", "zmqtt", "fastapi_stream.")
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                broker_package = name.startswith("fastapi_stream.") and name.split(".")[1] in (
                    "kafka",
                    "rabbit",
                    "nats",
                    "redis",
                    "mqtt",
                    "memory",
                )
                assert not broker_package, f"{path.name} imports {name}"
                assert not name.startswith(brokers[:-1]), f"{path.name} imports {name}"


async def test_order_per_key(engine: AsyncEngine, memory_url: str) -> None:
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, order="key", batch_size=3, poll_interval=0.05)
    got = received_on(router, "keyed")
    async with async_sessionmaker(engine)() as session, session.begin():
        for i in range(12):
            await outbox.publish(session, i, "keyed", key=f"k{i % 2}")
    async with router.broker:
        await eventually(lambda: len(got) == 12, "12 messages")
    for key in ("k0", "k1"):
        values = [m.decode() for m in got if m.raw_message.options["key"] == key]
        assert values == [i for i in range(12) if f"k{i % 2}" == key]
    table = outbox.table
    async with engine.connect() as conn:
        partitions = set((await conn.execute(select(table.c.partition))).scalars())
    assert partitions == {"keyed\x1fk0", "keyed\x1fk1"}


def test_a_failing_readiness_check_makes_the_app_unready(memory_url: str) -> None:
    """``health.add_readiness_check``, which the outbox uses: a check that says no, or
    raises, turns readiness to 503 and is reported under the broker's ``checks``."""
    from typing import Any

    from fastapi_stream.health import add_readiness_check

    router = StreamRouter(memory_url)

    async def says_no() -> tuple[bool, dict[str, Any]]:
        return False, {"why": "lagging"}

    async def raises() -> tuple[bool, dict[str, Any]]:
        raise ConnectionError("database down")

    add_readiness_check(router.broker, "no", says_no)
    add_readiness_check(router.broker, "broken", raises)
    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        response = client.get("/health/ready")
    assert response.status_code == 503
    checks = response.json()["brokers"][0]["checks"]
    assert checks == {
        "no": {"ready": False, "why": "lagging"},
        "broken": {"ready": False, "error": "ConnectionError"},
    }


async def test_a_backlog_over_many_partitions_drains_without_waiting_for_polls(
    engine: AsyncEngine, memory_url: str
) -> None:
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, partitions_per_batch=2, poll_interval=30)
    got = [received_on(router, f"p{k}") for k in range(10)]
    async with async_sessionmaker(engine)() as session, session.begin():
        for i in range(30):
            await outbox.publish(session, i, f"p{i % 10}")
    async with router.broker:
        await eventually(lambda: sum(map(len, got)) == 30, "30 messages", timeout=5)


async def test_sqlite_in_memory_with_a_static_pool(memory_url: str) -> None:
    from sqlalchemy.pool import StaticPool

    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    try:
        router = StreamRouter(memory_url)
        outbox = Outbox(router, engine, poll_interval=0.05)
        got = received_on(router, "in-memory")
        async with router.broker:
            async with async_sessionmaker(engine)() as session, session.begin():
                await outbox.publish(session, "x", "in-memory")
            await eventually(lambda: got, "the message")
    finally:
        await engine.dispose()
