"""Outbox workloads (PostgreSQL + Redis list): publishes per second through the outbox
relay, against plain ``broker.publish()`` of the same messages in the same run.

In these rows the *raw* column is fastapi_stream's own plain ``publish()`` (one awaited
publish per message, the call an HTTP handler makes without an outbox) and the
*fastapi_stream* column the outbox:

* ``write + relay``: one transaction per message (as one per HTTP request), each writing
  an outbox row, while the relay sends them; the clock stops when the last row was sent.
* ``relay drain``: N rows committed beforehand (a broker that was down); the clock runs
  from the broker's start until the relay sent them all.

Every run makes a PostgreSQL database of its own and drops it, and deletes its list.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from bench.common import PAYLOAD, TIMEOUT, unique
from bench.harness import OURS, RAW, Workload
from fastapi_stream import StreamRouter
from fastapi_stream.outbox import Outbox

REDIS = "redis://127.0.0.1:6379/0"
POSTGRES = "postgres@127.0.0.1:5432"


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(f"postgresql://{POSTGRES}/postgres", timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _with_database(
    body: Callable[[AsyncEngine, StreamRouter, str], Awaitable[float]],
) -> float:
    database, channel = unique("bench_outbox").replace("-", "_"), unique("bench:outbox")
    await _admin(f'CREATE DATABASE "{database}"')
    engine = create_async_engine(f"postgresql+asyncpg://{POSTGRES}/{database}")
    router = StreamRouter(REDIS)
    client = Redis.from_url(REDIS)
    try:
        return await body(engine, router, channel)
    finally:
        await client.delete(channel)
        await client.aclose()
        await engine.dispose()
        await _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def _sent(outbox: Outbox, n: int) -> None:
    """Until the relay sent ``n`` rows (bounded)."""
    deadline = time.monotonic() + TIMEOUT
    while outbox.relay.sent_total < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the relay sent {outbox.relay.sent_total} of {n}")
        await asyncio.sleep(0.001)


async def plain(n: int) -> float:
    async def body(engine: AsyncEngine, router: StreamRouter, channel: str) -> float:
        async with router.broker:
            started = time.perf_counter()
            for _ in range(n):
                await router.broker.publish(PAYLOAD, channel, list=True)
            return time.perf_counter() - started

    return await _with_database(body)


async def write_and_relay(n: int) -> float:
    async def body(engine: AsyncEngine, router: StreamRouter, channel: str) -> float:
        outbox = Outbox(router, engine)
        sessions = async_sessionmaker(engine)
        async with router.broker:
            started = time.perf_counter()
            for _ in range(n):
                async with sessions() as session, session.begin():
                    await outbox.publish(session, PAYLOAD, channel, list=True)
            await _sent(outbox, n)
            return time.perf_counter() - started

    return await _with_database(body)


async def drain(n: int) -> float:
    async def body(engine: AsyncEngine, router: StreamRouter, channel: str) -> float:
        outbox = Outbox(router, engine)
        await outbox.create_table()
        sessions = async_sessionmaker(engine)
        for i in range(0, n, 1000):
            async with sessions() as session, session.begin():
                for _ in range(min(1000, n - i)):
                    await outbox.publish(session, PAYLOAD, channel, list=True)
        started = time.perf_counter()
        async with router.broker:
            await _sent(outbox, n)
            return time.perf_counter() - started

    return await _with_database(body)


def workloads() -> list[Workload]:
    return [
        Workload(
            "outbox (pg+redis)",
            "write + relay, 1 tx/msg (raw = plain publish)",
            {RAW: plain, OURS: write_and_relay},
            least=1_000,
        ),
        Workload(
            "outbox (pg+redis)",
            "relay drain of committed rows (raw = plain publish)",
            {RAW: plain, OURS: drain},
            least=1_000,
        ),
    ]
