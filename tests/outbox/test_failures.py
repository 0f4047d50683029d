"""Rows the broker refuses, on SQLite, PostgreSQL and MariaDB with the memory broker (and
on the real Redis): a refusal counts an attempt and holds back its partition; after
``max_attempts`` the row is set aside (kept, logged by id, counted) and the rows behind
it flow; an outage counts nothing; ``retry_failed()`` sends it again. The schema of the
first version is brought up to date, or named in a clear error with
``create_table=False``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from sqlalchemy import Index, MetaData, Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from fastapi_stream import Backoff, OutgoingMessage, PublishError, StreamMessage, StreamRouter
from fastapi_stream.outbox import Outbox, upgrade_ddl
from fastapi_stream.outbox.relay import looks_like_outage
from fastapi_stream.outbox.tables import UPGRADE_COLUMNS, outbox_table
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

FAST = Backoff(first=0.01, cap=0.05)
POISON = b"poison"


def received_on(router: StreamRouter, channel: str) -> list[StreamMessage]:
    got: list[StreamMessage] = []

    @router.subscriber(channel)
    async def collect(msg: StreamMessage) -> None:
        got.append(msg)

    return got


class RefusingBroker:
    """Wraps the relay's send: the broker answers, and refuses every batch holding the
    poison body (as Kafka refuses an oversized record) while ``refusing``; or raises a
    connection error for everything while ``down``. ``events`` is what it saw, in order."""

    def __init__(self, outbox: Outbox) -> None:
        self.refusing = True
        self.down = False
        self.events: list[tuple[str, bytes]] = []
        send = outbox.relay._send

        async def refuse(messages: Sequence[OutgoingMessage]) -> None:
            if self.down:
                raise PublishError("Redis at 127.0.0.1:6397: 1 publish(es) failed: ConnectionError")
            if self.refusing and any(m.body == POISON for m in messages):
                self.events.append(("refused", POISON))
                raise PublishError(
                    "Kafka: a publish to 'a' failed: MessageSizeTooLargeError: the message is "
                    "1048677 bytes when serialized, over max_request_size"
                )
            await send(messages)
            self.events.extend(("sent", m.body) for m in messages)

        outbox.relay._send = refuse  # type: ignore[method-assign]


async def columns_of(outbox: Outbox, message_id: str) -> tuple[int, str | None, float | None]:
    table = outbox.table
    async with outbox.engine.connect() as conn:
        row = (
            await conn.execute(
                select(table.c.attempts, table.c.last_error, table.c.failed_at).where(
                    table.c.message_id == message_id
                )
            )
        ).one()
    return int(row.attempts), row.last_error, row.failed_at


async def test_a_refused_row_is_set_aside_and_the_rows_behind_it_flow(
    engine: AsyncEngine, memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from prometheus_client import CollectorRegistry

    from fastapi_stream.outbox import PrometheusOutboxMetrics

    registry = CollectorRegistry()
    router = StreamRouter(memory_url)
    outbox = Outbox(
        router,
        engine,
        poll_interval=0.05,
        max_attempts=3,
        backoff=FAST,
        metrics=PrometheusOutboxMetrics(registry=registry),
    )
    broker = RefusingBroker(outbox)
    a = received_on(router, "a")
    b = received_on(router, "b")
    ids: dict[object, str | None] = {}
    async with async_sessionmaker(engine)() as session, session.begin():
        for value in (0, 1, "poison", 2, 3):
            ids[value] = await outbox.publish(session, value, "a")
        for value in (10, 11):
            await outbox.publish(session, value, "b")
    poison_id = ids["poison"]
    assert poison_id is not None
    caplog.set_level(logging.WARNING)
    async with router.broker:
        await eventually(lambda: len(a) == 4 and len(b) == 2, "the other rows", timeout=10)
        await eventually(lambda: outbox.relay.failed_total == 1, "the set-aside committed")
        assert [m.decode() for m in a] == [0, 1, 2, 3]  # the poison left out, order kept
        assert [m.decode() for m in b] == [10, 11]
        # It was refused (in its batch, then alone) until set aside, and only then did
        # the rows behind it go: they waited.
        refused = [i for i, event in enumerate(broker.events) if event[0] == "refused"]
        assert len(refused) >= 3
        assert broker.events.index(("sent", b"2")) > refused[-1]
        assert ("sent", b"10") in broker.events
        attempts, error, failed_at = await columns_of(outbox, poison_id)
        assert attempts == 3 and failed_at is not None
        assert error is not None and "MessageSizeTooLargeError" in error
        assert await outbox.failed_count() == 1
        [failed] = await outbox.failed()
        assert failed["message_id"] == poison_id and failed["channel"] == "a"
        assert failed["attempts"] == 3 and "body" not in failed
        assert await outbox.lag() == 0  # a failed row is not waiting
        ready, details = await outbox._ready()
        assert ready and details["failed"] == 1
        lines = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
        assert len(lines) == 1 and poison_id in lines[0] and "poison" not in lines[0]
        assert "MessageSizeTooLargeError" in lines[0]
        # The refusals were relay errors "message", never "broker".
        errors = "fastapi_stream_outbox_relay_errors_total"
        assert registry.get_sample_value(errors, {"reason": "message"}) == 2
        assert registry.get_sample_value(errors, {"reason": "broker"}) is None
        failed_metric = "fastapi_stream_outbox_failed_messages_total"
        assert registry.get_sample_value(failed_metric, {"destination": "a"}) == 1

        # Fixed (say the broker's limit was raised): retried, it goes out, behind 2 and 3.
        broker.refusing = False
        async with async_sessionmaker(engine)() as session, session.begin():
            await outbox.publish(session, 4, "a")
        await eventually(lambda: len(a) == 5, "the row written after")
        assert await outbox.retry_failed() == 1
        await eventually(lambda: len(a) == 6, "the retried row", timeout=10)
        assert [m.decode() for m in a] == [0, 1, 2, 3, 4, "poison"]
        assert a[-1].message_id == poison_id
        assert await outbox.failed_count() == 0
        assert await outbox.retry_failed() == 0


async def test_a_row_refused_fewer_times_than_allowed_goes_out_in_order(
    engine: AsyncEngine, memory_url: str
) -> None:
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, poll_interval=0.05, max_attempts=50, backoff=FAST)
    broker = RefusingBroker(outbox)
    a = received_on(router, "a")
    async with async_sessionmaker(engine)() as session, session.begin():
        for value in (0, "poison", 1, 2):
            await outbox.publish(session, value, "a")
    async with router.broker:
        await eventually(lambda: broker.events.count(("refused", POISON)) >= 4, "refusals")
        await eventually(lambda: outbox.relay.failing, "the relay failing")
        assert [m.decode() for m in a] == [0]  # the rows behind it wait
        assert (outbox.relay.last_error or "").startswith("message")
        ready, details = await outbox._ready()  # a refusal does not make the app unready
        assert ready and details["error"].startswith("message")
        broker.refusing = False  # a passing refusal (a queue not bound yet, say)
        await eventually(lambda: len(a) == 4, "the rest, in order")
    assert [m.decode() for m in a] == [0, "poison", 1, 2]
    assert await outbox.failed_count() == 0


async def test_an_outage_counts_no_attempts(engine: AsyncEngine, memory_url: str) -> None:
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, poll_interval=0.05, max_attempts=2, backoff=FAST)
    broker = RefusingBroker(outbox)
    broker.refusing = False
    broker.down = True
    a = received_on(router, "a")
    async with async_sessionmaker(engine)() as session, session.begin():
        for value in range(5):
            await outbox.publish(session, value, "a")
    async with router.broker:
        await eventually(lambda: outbox.relay._attempts.failures > 5, "failures past max")  # type: ignore[union-attr]
        assert (outbox.relay.last_error or "").startswith("broker")
        broker.down = False
        await eventually(lambda: len(a) == 5, "every row once the broker is back")
    table = outbox.table
    async with engine.connect() as conn:
        attempts = (await conn.execute(select(table.c.attempts))).scalars().all()
    assert set(attempts) == {0}
    assert await outbox.failed_count() == 0


async def test_a_refusal_while_the_broker_does_not_answer_is_an_outage(
    engine: AsyncEngine, memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PublishError that does not say why counts an attempt only if the broker answers
    a ping afterwards."""
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, poll_interval=0.05, max_attempts=2, backoff=FAST)
    RefusingBroker(outbox)  # refuses the poison with an error that names no outage
    answers = False

    async def ping(timeout: float = 3.0) -> bool:
        return answers

    monkeypatch.setattr(router.broker, "ping", ping)
    a = received_on(router, "a")
    async with async_sessionmaker(engine)() as session, session.begin():
        message_id = await outbox.publish(session, "poison", "a")
        await outbox.publish(session, 1, "a")
    assert message_id is not None
    async with router.broker:
        await eventually(lambda: outbox.relay._attempts.failures > 4, "failures")  # type: ignore[union-attr]
        assert (await columns_of(outbox, message_id))[0] == 0
        answers = True
        await eventually(lambda: len(a) == 1, "the row behind it, once the poison is aside")
    assert (await columns_of(outbox, message_id))[0] == 2


def test_what_counts_as_an_outage() -> None:
    from fastapi_stream import BrokerNotConnected, ConfigurationError

    assert looks_like_outage(ConnectionRefusedError(111, "Connection refused"))
    assert looks_like_outage(BrokerNotConnected("NATS is not connected (publishing)"))
    assert looks_like_outage(PublishError("Kafka did not confirm a publish within 5.0s"))
    assert looks_like_outage(TimeoutError())
    try:
        try:
            raise OSError("network unreachable")
        except OSError:
            raise PublishError("the publish failed") from None
    except PublishError as exc:
        assert looks_like_outage(exc)  # what it was raised during
    assert not looks_like_outage(PublishError("WRONGTYPE Operation against a key"))
    assert not looks_like_outage(ConfigurationError("unknown NATS publish option(s) ['x']"))


async def test_retry_failed_by_message_id(engine: AsyncEngine, memory_url: str) -> None:
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, poll_interval=0.05, max_attempts=1, backoff=FAST)
    broker = RefusingBroker(outbox)
    a = received_on(router, "a")
    b = received_on(router, "b")
    async with async_sessionmaker(engine)() as session, session.begin():
        first = await outbox.publish(session, "poison", "a")
        second = await outbox.publish(session, "poison", "b")
    assert first is not None and second is not None
    async with router.broker:
        await eventually(lambda: outbox.relay.failed_total == 2, "both set aside", timeout=10)
        assert await outbox.failed_count() == 2
        broker.refusing = False
        assert await outbox.retry_failed([second]) == 1
        await eventually(lambda: b, "the retried one")
        assert not a
        assert [row["message_id"] for row in await outbox.failed()] == [first]
        assert await outbox.retry_failed([]) == 0


def v1_table(name: str) -> Table:
    """The outbox table as the first version made it (no attempts, errors, failures)."""
    current = outbox_table(name)
    metadata = MetaData()
    columns = [c._copy() for c in current.columns if c.name not in UPGRADE_COLUMNS]
    return Table(name, metadata, *columns, Index(f"ix_{name}_unsent", "sent_at", "id"))


async def test_a_version_1_table_is_upgraded_at_startup(
    engine: AsyncEngine, memory_url: str
) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(v1_table("old_outbox").create)
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, table="old_outbox", poll_interval=0.05)
    got = received_on(router, "m")
    async with async_sessionmaker(engine)() as session, session.begin():
        await outbox.publish(session, "written by version 1's schema", "m")  # writes work
    async with router.broker:
        await eventually(lambda: got, "the row, after the upgrade", timeout=10)
        assert await outbox.failed_count() == 0
    async with router.broker:  # a second start finds nothing to do
        await eventually(lambda: outbox.relay.schema_ready, "the schema checked")


async def test_a_version_1_table_without_create_table_names_the_upgrade(
    engine: AsyncEngine, memory_url: str
) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(v1_table("kept_outbox").create)
    router = StreamRouter(memory_url)
    outbox = Outbox(
        router, engine, table="kept_outbox", create_table=False, poll_interval=0.05, backoff=FAST
    )
    got = received_on(router, "m")
    async with async_sessionmaker(engine)() as session, session.begin():
        await outbox.publish(session, "x", "m")
    async with router.broker:
        await eventually(lambda: outbox.relay.last_error, "the relay's complaint")
        assert "upgrade_ddl" in (outbox.relay.last_error or "")
        ready, _ = await outbox._ready()
        assert not ready
        async with engine.begin() as conn:  # the application's migration
            dialect = engine.dialect.name
            for statement in upgrade_ddl(dialect, outbox="kept_outbox").split(";"):
                if statement.strip():
                    await conn.exec_driver_sql(statement)
        await eventually(lambda: got, "the row, once migrated", timeout=10)


async def test_a_missing_table_without_create_table_names_the_ddl(
    engine: AsyncEngine, memory_url: str
) -> None:
    router = StreamRouter(memory_url)
    outbox = Outbox(router, engine, table="absent", create_table=False, backoff=FAST)
    async with router.broker:
        await eventually(lambda: outbox.relay.last_error, "the relay's complaint")
        assert "ddl(" in (outbox.relay.last_error or "")


async def unsent_count(engine: AsyncEngine, outbox: Outbox) -> int:
    table = outbox.table
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(func.count()).select_from(table).where(table.c.sent_at.is_(None))
        )
    return int(value or 0)


def test_a_refusal_is_kept_without_the_payload() -> None:
    from fastapi_stream.outbox.store import scrub

    quoted = "Command # 1 (RPUSH k fstream:1 secret) of pipeline caused error: x"
    assert scrub(quoted, b"secret") == "Command # 1 (...) of pipeline caused error: x"
    body = b'{"card": "4111 1111 1111 1111", "name": "A. Customer"}'
    assert "4111" not in scrub(f"refused: {body.decode()[:30]}...", body)
    assert scrub("refused: too large", b"ok") == "refused: too large"
