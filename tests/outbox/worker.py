"""A process of the outbox tests' own, started and killed by PID::

    python -m tests.outbox.worker write   DB_URL REDIS_URL CHANNEL COUNT
    python -m tests.outbox.worker relay   DB_URL REDIS_URL
    python -m tests.outbox.worker consume DB_URL REDIS_URL CHANNEL [die]

``write`` commits COUNT outbox rows (one transaction each, channel ``CHANNEL``, a Redis
list), printing ``committed <message id>`` after each commit, then ``done``; its relay
runs meanwhile, slowed down (200 ms per batch of 2) so a kill finds rows unsent.
``relay`` only relays (50 ms per batch of 10, two partitions per batch), printing
``sent <n>`` as it goes. ``consume`` reads the stream ``CHANNEL`` (group ``g``) through an
inbox and adds one ``effects`` row per message; with ``die`` it kills itself with SIGKILL
after the first message's transaction committed and before the ack. Every process ends
when killed; none runs longer than five minutes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from fastapi import Depends
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from fastapi_stream import Middleware, OutgoingMessage, StreamMessage, StreamRouter
from fastapi_stream.core.middleware import ConsumeNext
from fastapi_stream.outbox import Inbox, Outbox
from fastapi_stream.redis import RedisRouter, StreamSub

LIFETIME = 300.0

metadata = MetaData()
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(64)),
)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def slowed(outbox: Outbox, delay: float) -> None:
    """Make the relay take ``delay`` seconds per batch (before it publishes)."""
    send = outbox.relay._send

    async def slow(messages: Sequence[OutgoingMessage]) -> None:
        await asyncio.sleep(delay)
        await send(messages)

    outbox.relay._send = slow  # type: ignore[method-assign]


async def write(db_url: str, redis_url: str, channel: str, count: int) -> None:
    engine = create_async_engine(db_url)
    router = StreamRouter(redis_url)
    outbox = Outbox(router, engine, batch_size=2, notify=False, poll_interval=0.2)
    slowed(outbox, 0.2)
    sessions = async_sessionmaker(engine)
    async with router.broker:
        for i in range(count):
            async with sessions() as session, session.begin():
                message_id = await outbox.publish(session, {"n": i}, channel, list=True)
            say(f"committed {message_id}")
        say("done")
        await asyncio.sleep(LIFETIME)


async def relay(db_url: str, redis_url: str) -> None:
    engine = create_async_engine(db_url)
    router = StreamRouter(redis_url)
    outbox = Outbox(router, engine, batch_size=10, partitions_per_batch=2, poll_interval=0.1)
    slowed(outbox, 0.05)
    async with router.broker:
        say("started")
        for _ in range(int(LIFETIME * 10)):
            await asyncio.sleep(0.1)
            say(f"sent {outbox.relay.sent_total}")


class DieAfterCommit(Middleware):
    """Outside the inbox: its transaction has committed when ``call_next`` returns; the
    ack comes after this returns, so dying here is dying between the two."""

    async def consume(self, message: StreamMessage, call_next: ConsumeNext) -> Any:
        result = await call_next(message)
        os.kill(os.getpid(), signal.SIGKILL)
        return result


async def consume(db_url: str, redis_url: str, channel: str, die: bool) -> None:
    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    router = RedisRouter(redis_url, min_idle_time=1.0)
    inbox = Inbox(engine)
    middlewares = [DieAfterCommit(), inbox] if die else [inbox]

    @router.subscriber(stream=StreamSub(channel, group="g", last_id="0"), middlewares=middlewares)
    async def handle(msg: StreamMessage, session: AsyncSession = Depends(inbox.session)) -> None:
        await session.execute(insert(effects).values(message_id=msg.message_id))

    async with router.broker:
        say("started")
        for _ in range(int(LIFETIME * 10)):
            await asyncio.sleep(0.1)
            say(f"skipped {inbox.skipped}")


def main(argv: list[str]) -> None:
    mode, db_url, redis_url, *rest = argv
    if mode == "write":
        asyncio.run(write(db_url, redis_url, rest[0], int(rest[1])))
    elif mode == "relay":
        asyncio.run(relay(db_url, redis_url))
    else:
        asyncio.run(consume(db_url, redis_url, rest[0], rest[1:] == ["die"]))


if __name__ == "__main__":
    main(sys.argv[1:])
