"""The outbox and the inbox on the real PostgreSQL and real Redis, across processes:
a writer killed before its rows were sent, a broker down while rows pile up, two relays
on one table, a consumer killed between its commit and its ack.

Processes are this suite's own (``tests/outbox/worker.py``), killed by PID; the broker
that goes down is a redis-server of its own on port 6397. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from fastapi_stream import Backoff, StreamRouter
from fastapi_stream.core.envelope import unpack
from fastapi_stream.outbox import Outbox
from tests.outbox.conftest import PrivateRedis
from tests.outbox.worker import effects
from tests.waiting import eventually

# Each process takes seconds to start on a loaded machine (imports): room for that.
pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
REDIS = "redis://127.0.0.1:6379/0"


class Worker:
    """``python -m tests.outbox.worker ...`` with its stdout lines collected."""

    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.outbox.worker", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def saw(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for line in self.lines)

    def last(self, prefix: str) -> str:
        return next((line for line in reversed(self.lines) if line.startswith(prefix)), "")

    def count(self, prefix: str) -> int:
        """The number on the last ``prefix <n>`` line (0 before the first)."""
        line = self.last(f"{prefix} ")
        return int(line.split()[1]) if line else 0

    def kill(self) -> None:
        """SIGKILL by PID and reap."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.fixture
async def pg(pg_url: str) -> Iterator[AsyncEngine]:  # type: ignore[misc]
    engine = create_async_engine(pg_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def redis_client() -> Iterator[aioredis.Redis]:  # type: ignore[misc]
    client = aioredis.Redis.from_url(REDIS)
    yield client
    await client.aclose()


def name() -> str:
    return f"outbox-test-{uuid.uuid4().hex[:10]}"


async def listed(client: aioredis.Redis, key: str) -> list[tuple[str, bytes]]:
    """(message id, body) of each item of the list ``key``, in order."""
    items = []
    for raw in await client.lrange(key, 0, -1):
        body, meta = unpack(raw)
        items.append((str(meta.get("message_id")), body))
    return items


async def count_unsent(engine: AsyncEngine, outbox: Outbox) -> int:
    table = outbox.table
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(func.count()).select_from(table).where(table.c.sent_at.is_(None))
        )
    return int(value or 0)


async def test_commit_and_rollback_on_real_redis(
    pg: AsyncEngine, redis_client: aioredis.Redis
) -> None:
    channel = name()
    router = StreamRouter(REDIS)
    outbox = Outbox(router, pg, poll_interval=0.1)
    sessions = async_sessionmaker(pg)
    try:
        async with router.broker:
            with pytest.raises(RuntimeError):
                async with sessions() as session, session.begin():
                    await outbox.publish(session, {"n": 0}, channel, list=True)
                    raise RuntimeError("rolled back")
            async with sessions() as session, session.begin():
                sent = await outbox.publish(session, {"n": 1}, channel, list=True)
            await eventually(lambda: outbox.relay.sent_total == 1, "the row sent")
        assert await listed(redis_client, channel) == [(sent, b'{"n":1}')]
    finally:
        await redis_client.delete(channel)


async def test_writer_killed_before_the_relay_sent_loses_nothing(
    pg_url: str, pg: AsyncEngine, redis_client: aioredis.Redis, workers: list[Worker]
) -> None:
    channel = name()
    writer = Worker("write", pg_url, REDIS, channel, "200")
    workers.append(writer)
    await eventually(lambda: writer.saw("done"), "200 commits", timeout=60)
    committed = [line.split()[1] for line in writer.lines if line.startswith("committed ")]
    writer.kill()
    router = StreamRouter(REDIS)
    outbox = Outbox(router, pg, poll_interval=0.1)
    try:
        left = await count_unsent(pg, outbox)
        assert left > 0, "the relay had sent everything before the kill: nothing was tested"
        async with router.broker:  # the restarted service's relay
            await eventually(lambda: _none_unsent(pg, outbox), "every row sent", timeout=30)
        got = [message_id for message_id, _ in await listed(redis_client, channel)]
        assert len(committed) == 200
        assert set(committed) - set(got) == set(), "lost messages"
        # At least once: a batch published when the kill came may be there twice.
        assert len(got) - len(set(got)) <= 5
    finally:
        await redis_client.delete(channel)


async def _none_unsent(engine: AsyncEngine, outbox: Outbox) -> bool:
    return await count_unsent(engine, outbox) == 0


async def test_broker_down_rows_pile_up_then_all_go_in_order(pg: AsyncEngine) -> None:
    broker = PrivateRedis()
    channels = [name() for _ in range(3)]
    try:
        broker.start()
        router = StreamRouter(broker.url, reconnect=Backoff(first=0.05, cap=0.5))
        outbox = Outbox(router, pg, batch_size=20, poll_interval=0.1)
        sessions = async_sessionmaker(pg)
        async with router.broker:
            async with sessions() as session, session.begin():
                await outbox.publish(session, -1, channels[0], list=True)
            await eventually(lambda: outbox.relay.sent_total == 1, "the first row sent")
            broker.kill()
            for i in range(150):
                async with sessions() as session, session.begin():
                    await outbox.publish(session, i, channels[i % 3], list=True)
            await eventually(lambda: outbox.relay.failing, "the relay failing", timeout=30)
            assert outbox.relay.last_error is not None
            assert outbox.relay.last_error.startswith("broker")
            ready, details = await outbox._ready()
            assert not ready and details["lag_seconds"] >= 0
            broker.start()
            await eventually(lambda: _none_unsent(pg, outbox), "all rows sent", timeout=60)
            assert not outbox.relay.failing
            # The outage counted no attempt against any row: none was set aside.
            async with pg.connect() as conn:
                attempts = (await conn.execute(select(outbox.table.c.attempts))).scalars()
                assert set(attempts) == {0}
            assert await outbox.failed_count() == 0
        client = aioredis.Redis.from_url(broker.url)
        try:
            for k, channel in enumerate(channels):
                bodies = [int(body) for _, body in await listed(client, channel)]
                expected = ([-1] if k == 0 else []) + [i for i in range(150) if i % 3 == k]
                # At least once, in order: a batch cut by the kill may come again, behind.
                assert _dedupe(bodies) == expected
        finally:
            await client.aclose()
    finally:
        broker.close()


def _dedupe(values: list[int]) -> list[int]:
    seen: set[int] = set()
    return [v for v in values if not (v in seen or seen.add(v))]  # type: ignore[func-returns-value]


async def test_two_relays_send_every_row_once_in_order(
    pg_url: str, pg: AsyncEngine, redis_client: aioredis.Redis, workers: list[Worker]
) -> None:
    channels = [name() for _ in range(6)]
    router = StreamRouter(REDIS)
    writer = Outbox(router, pg, relay=False)
    await writer.create_table()
    sessions = async_sessionmaker(pg)
    try:
        async with sessions() as session, session.begin():
            for i in range(600):
                await writer.publish(session, i, channels[i % 6], list=True)
        first = Worker("relay", pg_url, REDIS)
        second = Worker("relay", pg_url, REDIS)
        workers.extend([first, second])
        await eventually(lambda: _none_unsent(pg, writer), "every row sent", timeout=90)
        assert first.process.poll() is None and second.process.poll() is None

        def counts() -> tuple[int, int]:
            return first.count("sent"), second.count("sent")

        await eventually(lambda: sum(counts()) == 600, "their counts adding up to 600")
        by_first, by_second = counts()
        assert by_first > 0 and by_second > 0, "one relay did all the work"
        for k, channel in enumerate(channels):
            items = await listed(redis_client, channel)
            ids = Counter(message_id for message_id, _ in items)
            assert max(ids.values()) == 1, "a row was sent twice"
            assert [int(body) for _, body in items] == [i for i in range(600) if i % 6 == k]
    finally:
        await redis_client.delete(*channels)


async def test_inbox_consumer_killed_after_commit_before_ack_has_its_effect_once(
    pg_url: str, pg: AsyncEngine, redis_client: aioredis.Redis, workers: list[Worker]
) -> None:
    channel = name()
    router = StreamRouter(REDIS)
    try:
        async with router.broker:
            for i in range(5):
                await router.broker.publish({"n": i}, channel, stream=True, message_id=f"m{i}")
        dying = Worker("consume", pg_url, REDIS, channel, "die")
        workers.append(dying)
        dying.process.wait(timeout=60)
        assert dying.process.returncode == -signal.SIGKILL
        async with pg.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(effects)) == 1
        pending = await redis_client.xpending(channel, "g")
        assert pending["pending"] >= 1, "the first message was acked before the kill"
        again = Worker("consume", pg_url, REDIS, channel)
        workers.append(again)

        async def all_done() -> bool:
            info = await redis_client.xpending(channel, "g")
            return bool(info["pending"] == 0 and again.saw("skipped 1"))

        await eventually(all_done, "the redelivery skipped and the rest processed", timeout=60)
        async with pg.connect() as conn:
            rows = (await conn.execute(select(effects.c.message_id))).scalars().all()
        assert Counter(rows) == Counter(f"m{i}" for i in range(5))
    finally:
        await redis_client.delete(channel)


async def test_broker_down_at_startup_writes_still_commit_and_go_out_later(
    pg: AsyncEngine,
) -> None:
    broker = PrivateRedis()
    channel = name()
    try:
        router = StreamRouter(broker.url, reconnect=Backoff(first=0.05, cap=0.3))
        outbox = Outbox(router, pg, poll_interval=0.1)
        sessions = async_sessionmaker(pg)
        async with router.broker:  # the broker is not running: the app starts anyway
            assert not outbox.relay.running and not outbox.relay.table_ready
            for i in range(5):  # the first write makes the table, in its transaction
                async with sessions() as session, session.begin():
                    await outbox.publish(session, i, channel, list=True)
            assert await count_unsent(pg, outbox) == 5
            broker.start()
            await eventually(lambda: _none_unsent(pg, outbox), "the rows sent", timeout=30)
        client = aioredis.Redis.from_url(broker.url)
        try:
            assert [int(body) for _, body in await listed(client, channel)] == list(range(5))
        finally:
            await client.aclose()
    finally:
        broker.close()


async def test_a_key_redis_refuses_is_set_aside_and_retried_once_fixed(
    pg: AsyncEngine, redis_client: aioredis.Redis
) -> None:
    """Redis answers and refuses an RPUSH to a key that holds a string (WRONGTYPE): the
    row is set aside after max_attempts, the rows behind it on that channel and the
    other channel go out; once the key is fixed, retry_failed() sends it."""
    bad, good = name(), name()
    await redis_client.set(bad, "a string, not a list")
    router = StreamRouter(REDIS, reconnect=Backoff(first=0.02, cap=0.1))
    outbox = Outbox(router, pg, poll_interval=0.1, max_attempts=3)
    sessions = async_sessionmaker(pg)
    try:
        async with router.broker:
            async with sessions() as session, session.begin():
                refused = await outbox.publish(session, {"n": 0}, bad, list=True)
                await outbox.publish(session, {"n": 1}, good, list=True)
            await eventually(lambda: outbox.relay.failed_total == 1, "the row set aside")
            await eventually(lambda: outbox.relay.sent_total == 1, "the other channel's row")
            [failed] = await outbox.failed()
            assert failed["message_id"] == refused and failed["attempts"] == 3
            assert "WRONGTYPE" in failed["last_error"]
            # Redis ran the batch's other command before the error: at least once, the
            # row went again in the one-by-one pass.
            assert {body for _, body in await listed(redis_client, good)} == {b'{"n":1}'}
            await redis_client.delete(bad)  # fixed
            assert await outbox.retry_failed() == 1
            await eventually(lambda: outbox.relay.sent_total == 2, "the retried row sent")
        assert await listed(redis_client, bad) == [(refused, b'{"n":0}')]
        assert await outbox.failed_count() == 0
    finally:
        await redis_client.delete(bad, good)
