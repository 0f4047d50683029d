"""The outbox's SQL: writing a row in the caller's transaction, claiming and marking rows
for the relay, lag and pruning. Everything that differs between databases is here.

Claiming on PostgreSQL: the relay takes a transaction-scoped advisory lock on each
partition (channel, or channel and key) it is going to send, then locks that partition's
oldest unsent rows ``FOR UPDATE SKIP LOCKED``, publishes them, marks them sent and
commits, which releases both. Another relay skips a partition that is locked, so every
partition is sent by one relay at a time, in ``id`` order, and no row is sent twice while
the relay holding it is alive. If that relay dies, its transaction rolls back and the
rows are sent again by the next one (at least once).

Other databases (SQLite, MySQL/MariaDB) take the oldest unsent rows without locks: run
one relay per table there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, delete, insert, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.message import OutgoingMessage

__all__ = ["BrokerFailed", "OutboxStore", "is_postgresql"]

#: How many of the oldest unsent rows a PostgreSQL relay looks at to pick partitions.
_SCAN = 1000


_ASYNC_COMMIT = text("SET LOCAL synchronous_commit = off")


class BrokerFailed(Exception):
    """The broker did not take a batch (the database is fine); ``__cause__`` says why."""


def is_postgresql(engine: AsyncEngine | AsyncConnection | AsyncSession) -> bool:
    bind = engine.get_bind() if isinstance(engine, AsyncSession) else engine
    return bind.dialect.name == "postgresql"


def row_values(message: OutgoingMessage, partition: str, key: str | None) -> dict[str, Any]:
    """The outbox row that sends ``message`` (already encoded) when the relay copies it."""
    options = dict(message.options)
    try:
        json.dumps(options)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"the publish options {sorted(options)} to {message.channel!r} must be JSON "
            f"values to wait in the outbox ({exc})"
        ) from exc
    return {
        "message_id": message.message_id,
        "channel": message.channel,
        "partition": partition,
        "message_key": key,
        "body": message.body,
        "headers": message.headers or None,
        "content_type": message.content_type,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "options": options or None,
        "created_at": time.time(),
        "sent_at": None,
    }


def message_of(row: Row[Any]) -> OutgoingMessage:
    """The message a row holds, with its original id."""
    return OutgoingMessage(
        channel=row.channel,
        body=bytes(row.body),
        headers=dict(row.headers or {}),
        content_type=row.content_type,
        message_id=row.message_id,
        correlation_id=row.correlation_id,
        reply_to=row.reply_to,
        options=dict(row.options or {}),
    )


def _create_checkfirst(bind: Any, table: Table) -> None:
    connection = bind.connection() if isinstance(bind, Session) else bind
    table.create(connection, checkfirst=True)


class OutboxStore:
    """SQL on one outbox table through one engine."""

    def __init__(
        self, engine: AsyncEngine, table: Table, *, keep_sent: float, partitions: int = 4
    ) -> None:
        self.engine = engine
        #: How many partitions a PostgreSQL relay takes per batch (fewer: replicas share).
        self.partitions = partitions
        self.table = table
        self.keep_sent = keep_sent
        self.postgresql = engine.dialect.name == "postgresql"
        #: The LISTEN/NOTIFY channel of this table on PostgreSQL.
        self.notify_channel = f"{table.name}_outbox"[:63]
        quoted = engine.dialect.identifier_preparer.format_table(table)
        # Lock up to :partitions of the partitions of the oldest unsent rows, oldest first,
        # skipping those another relay holds. The CTE is materialized in that order and
        # the lock is taken as rows are pulled, so LIMIT stops taking locks.
        self._lock_partitions = text(
            "WITH heads AS MATERIALIZED ("
            " SELECT partition FROM ("
            f"  SELECT partition, id FROM {quoted} WHERE sent_at IS NULL ORDER BY id LIMIT :scan"
            " ) AS oldest GROUP BY partition ORDER BY min(id))"
            " SELECT partition FROM heads"
            " WHERE pg_try_advisory_xact_lock(hashtext(:space), hashtext(partition))"
            " LIMIT :partitions"
        )

    async def create(self) -> None:
        """Create the table and its index unless they exist."""
        async with self.engine.begin() as conn:
            await conn.run_sync(self.table.create, checkfirst=True)

    async def create_in(self, session: AsyncSession | AsyncConnection) -> None:
        """Create the table in the caller's transaction unless it exists (before the
        relay created it: a broker down at the app's first start). On PostgreSQL in a
        savepoint, so that losing a race with another creator costs nothing."""
        if not self.postgresql:
            await session.run_sync(_create_checkfirst, self.table)
            return
        try:
            async with session.begin_nested():
                await session.run_sync(_create_checkfirst, self.table)
        except DBAPIError:
            pass  # made by another transaction meanwhile

    async def write(
        self, session: AsyncSession | AsyncConnection, values: Mapping[str, Any], notify: bool
    ) -> None:
        """Insert a row in the caller's transaction; on PostgreSQL, ``notify`` also sends
        the NOTIFY that wakes listening relays when (and only if) it commits."""
        await session.execute(insert(self.table).values(**values))
        if notify:
            await session.execute(
                text("SELECT pg_notify(:channel, '')"), {"channel": self.notify_channel}
            )

    async def relay_batch(
        self, send: Callable[[Sequence[OutgoingMessage]], Awaitable[None]], limit: int
    ) -> dict[str, int]:
        """Claim up to ``limit`` rows in order, ``send`` them, mark them sent, commit.
        Returns how many rows of each channel went out. ``send`` failing raises
        :class:`BrokerFailed` and leaves the rows unsent."""
        table = self.table
        async with self.engine.connect() as conn, conn.begin():
            rows = await self._claim(conn, limit)
            if not rows:
                return {}
            if self.postgresql:
                # Marking rows sent need not wait for the disk: a crash that loses the mark
                # sends the rows again (at least once), it never loses one.
                await conn.execute(_ASYNC_COMMIT)
            try:
                await send([message_of(row) for row in rows])
            except Exception as exc:
                raise BrokerFailed(f"{type(exc).__name__}: {exc}") from exc
            ids = [row.id for row in rows]
            if self.keep_sent > 0:
                await conn.execute(
                    update(table).where(table.c.id.in_(ids)).values(sent_at=time.time())
                )
            else:
                await conn.execute(delete(table).where(table.c.id.in_(ids)))
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.channel] = counts.get(row.channel, 0) + 1
        return counts

    async def _claim(self, conn: AsyncConnection, limit: int) -> Sequence[Row[Any]]:
        table = self.table
        query = select(table).where(table.c.sent_at.is_(None)).order_by(table.c.id).limit(limit)
        if self.postgresql:
            result = await conn.execute(
                self._lock_partitions,
                {"scan": _SCAN, "space": table.name, "partitions": self.partitions},
            )
            owned = list(result.scalars())
            if not owned:
                return []
            query = query.where(table.c.partition.in_(owned)).with_for_update(skip_locked=True)
        return (await conn.execute(query)).all()

    async def lag(self) -> float:
        """Seconds since the oldest unsent row was written (0 when none waits)."""
        table = self.table
        async with self.engine.connect() as conn:
            oldest = await conn.scalar(
                select(table.c.created_at)
                .where(table.c.sent_at.is_(None))
                .order_by(table.c.id)
                .limit(1)
            )
        return max(0.0, time.time() - oldest) if oldest is not None else 0.0

    async def prune(self) -> int:
        """Delete rows sent more than ``keep_sent`` seconds ago; returns how many."""
        table = self.table
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(table).where(table.c.sent_at < time.time() - self.keep_sent)
            )
        return int(result.rowcount or 0)
