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
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from fastapi_stream.core.errors import ConfigurationError, reason
from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.core.transport import Transport
from fastapi_stream.outbox.tables import UPGRADE_COLUMNS, upgrade_statements

__all__ = [
    "Batch",
    "BrokerFailed",
    "OutboxStore",
    "Refusal",
    "is_postgresql",
    "message_of",
    "scrub",
    "takes_key",
]

#: How many of the oldest unsent rows a PostgreSQL relay looks at to pick partitions.
_SCAN = 1000


_ASYNC_COMMIT = text("SET LOCAL synchronous_commit = off")


#: Characters of a broker's refusal kept in ``last_error``.
_ERROR_LENGTH = 1000


class BrokerFailed(Exception):
    """The broker did not take a batch (the database is fine); ``__cause__`` says why."""


@dataclass(slots=True)
class Refusal:
    """A row the broker refused while it answered: a message error, not an outage."""

    id: int
    message_id: str
    channel: str
    #: Refusals so far, this one included.
    attempts: int
    #: Why, as the broker client said it (never the payload).
    error: str
    #: Whether this refusal was the last allowed one: the row is now failed.
    set_aside: bool


@dataclass(slots=True)
class Batch:
    """What one relay transaction did."""

    #: Rows published and marked sent, per channel.
    sent: dict[str, int] = field(default_factory=dict)
    #: Rows the broker refused (each counted an attempt; some maybe set aside).
    refused: list[Refusal] = field(default_factory=list)
    #: The outage that cut a one-by-one pass short (what was sent before it is marked).
    outage: BaseException | None = None


#: redis-py quotes the failed command of a pipeline, arguments (the payload) included.
_QUOTED_COMMAND = re.compile(r"(Command # \d+) \(.*?\)( of pipeline)", re.DOTALL)
#: A payload shorter than this is not looked for in an error (it would match anything).
_SHORTEST_SCRUBBED = 4
#: How much of the payload's start is looked for.
_SCRUBBED_PREFIX = 24


def scrub(error: str, body: bytes) -> str:
    """``error`` without the payload: a quoted command is cut out, and so is the body
    (or its start) where a client quoted it."""
    error = _QUOTED_COMMAND.sub(r"\1 (...)\2", error)
    if len(body) >= _SHORTEST_SCRUBBED:
        text = body.decode("utf-8", "replace")
        for fragment in (text, text[:_SCRUBBED_PREFIX]):
            if len(fragment) >= _SHORTEST_SCRUBBED and fragment in error:
                error = error.replace(fragment, "<payload>")
    return error


def _waiting(table: Table) -> ColumnElement[bool]:
    """Rows still to send: not sent, not set aside."""
    return and_(table.c.sent_at.is_(None), table.c.failed_at.is_(None))


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


def takes_key(transport: Transport) -> bool:
    """Whether ``transport``'s publishes take a ``key`` option (Kafka's record key; a
    transport that declares no publish options, like the memory broker, takes any)."""
    declared = transport.publish_options
    return declared is None or "key" in declared


def message_of(row: Row[Any]) -> OutgoingMessage:
    """The message a row holds, with its original id; its key (if any) as the ``key``
    option, which the relay drops for a broker without keys (:func:`takes_key`)."""
    options = dict(row.options or {})
    if row.message_key is not None:
        options.setdefault("key", row.message_key)
    return OutgoingMessage(
        channel=row.channel,
        body=bytes(row.body),
        headers=dict(row.headers or {}),
        content_type=row.content_type,
        message_id=row.message_id,
        correlation_id=row.correlation_id,
        reply_to=row.reply_to,
        options=options,
    )


def _has_table(connection: Any, table: Table) -> bool:
    return bool(inspect(connection).has_table(table.name, table.schema))


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
            f"  SELECT partition, id FROM {quoted}"
            "   WHERE sent_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT :scan"
            " ) AS oldest GROUP BY partition ORDER BY min(id))"
            " SELECT partition FROM heads"
            " WHERE pg_try_advisory_xact_lock(hashtext(:space), hashtext(partition))"
            " LIMIT :partitions"
        )

    async def create(self) -> None:
        """Create the table and its indexes unless they exist; bring a version 1 table
        (without ``attempts``, ``last_error``, ``failed_at``) to the current schema."""
        async with self.engine.begin() as conn:
            await conn.run_sync(self.table.create, checkfirst=True)
            missing = await conn.run_sync(self._missing_columns)
            for statement in upgrade_statements(self.table, conn.dialect, missing):
                await conn.exec_driver_sql(statement)

    async def check(self) -> None:
        """Raise :class:`ConfigurationError`, saying what to run, unless the table exists
        with the current schema (for ``create_table=False``: a migration makes it)."""
        async with self.engine.connect() as conn:
            exists = await conn.run_sync(_has_table, self.table)
            missing = await conn.run_sync(self._missing_columns) if exists else []
        name, dialect = self.table.name, self.engine.dialect.name
        if not exists:
            raise ConfigurationError(
                f"the outbox table {name!r} does not exist: create it with the statements of "
                f"fastapi_stream.outbox.ddl({dialect!r}, outbox={name!r}), or let the relay "
                "make it (create_table=True)"
            )
        if missing:
            raise ConfigurationError(
                f"the outbox table {name!r} lacks the column(s) {missing} (schema version 1): "
                "add them with the statements of "
                f"fastapi_stream.outbox.upgrade_ddl({dialect!r}, outbox={name!r}), or let the "
                "relay do it (create_table=True)"
            )

    def _missing_columns(self, connection: Any) -> list[str]:
        """The columns of :data:`UPGRADE_COLUMNS` the existing table lacks."""
        table = self.table
        found = {c["name"] for c in inspect(connection).get_columns(table.name, table.schema)}
        return [name for name in UPGRADE_COLUMNS if name not in found]

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
        self,
        send: Callable[[Sequence[OutgoingMessage]], Awaitable[None]],
        limit: int,
        *,
        is_outage: Callable[[BaseException], Awaitable[bool]],
        max_attempts: int,
    ) -> Batch:
        """Claim up to ``limit`` rows in order, ``send`` them, mark them sent, commit.

        ``send`` failing with an outage (``is_outage``) raises :class:`BrokerFailed` and
        leaves the rows as they were. Any other failure is about a message: the rows are
        sent again one by one, in order, to find which the broker refuses; each refused
        row counts an attempt (set aside as failed at ``max_attempts``) and holds back
        the rows behind it in its partition, while the other partitions' rows go out."""
        batch = Batch()
        async with self.engine.connect() as conn, conn.begin():
            rows = await self._claim(conn, limit)
            if not rows:
                return batch
            if self.postgresql:
                # Marking rows sent need not wait for the disk: a crash that loses the mark
                # sends the rows again (at least once), it never loses one.
                await conn.execute(_ASYNC_COMMIT)
            if any(row.attempts for row in rows):
                # A row refused before: one by one at once, so that a broker whose batch
                # is not all or nothing (a Redis pipeline) does not take the rows behind
                # it again and again, ahead of it.
                sent = await self._one_by_one(rows, send, is_outage, max_attempts, batch)
            else:
                try:
                    await send([message_of(row) for row in rows])
                    sent = list(rows)
                except Exception as exc:
                    if await is_outage(exc):
                        raise BrokerFailed(reason(exc)) from exc
                    sent = await self._one_by_one(rows, send, is_outage, max_attempts, batch)
            await self._mark_sent(conn, [row.id for row in sent])
            now = time.time()
            for refusal in batch.refused:
                await conn.execute(
                    update(self.table)
                    .where(self.table.c.id == refusal.id)
                    .values(
                        attempts=refusal.attempts,
                        last_error=refusal.error,
                        failed_at=now if refusal.set_aside else None,
                    )
                )
        for row in sent:
            batch.sent[row.channel] = batch.sent.get(row.channel, 0) + 1
        return batch

    async def _one_by_one(
        self,
        rows: Sequence[Row[Any]],
        send: Callable[[Sequence[OutgoingMessage]], Awaitable[None]],
        is_outage: Callable[[BaseException], Awaitable[bool]],
        max_attempts: int,
        batch: Batch,
    ) -> list[Row[Any]]:
        """Send ``rows`` one at a time after their batch failed; returns those sent and
        adds the refused ones to ``batch``. An outage ends the pass (``batch.outage``)."""
        sent: list[Row[Any]] = []
        held: set[str] = set()  # partitions whose head was refused: the rest waits
        for row in rows:
            if row.partition in held:
                continue
            try:
                await send([message_of(row)])
            except Exception as exc:
                if await is_outage(exc):
                    batch.outage = exc
                    break
                attempts = int(row.attempts or 0) + 1
                refusal = Refusal(
                    id=row.id,
                    message_id=row.message_id,
                    channel=row.channel,
                    attempts=attempts,
                    error=scrub(reason(exc), bytes(row.body))[:_ERROR_LENGTH],
                    set_aside=attempts >= max_attempts,
                )
                batch.refused.append(refusal)
                if not refusal.set_aside:
                    held.add(row.partition)
                continue
            sent.append(row)
        return sent

    async def _mark_sent(self, conn: AsyncConnection, ids: Sequence[int]) -> None:
        if not ids:
            return
        table = self.table
        if self.keep_sent > 0:
            await conn.execute(update(table).where(table.c.id.in_(ids)).values(sent_at=time.time()))
        else:
            await conn.execute(delete(table).where(table.c.id.in_(ids)))

    async def _claim(self, conn: AsyncConnection, limit: int) -> Sequence[Row[Any]]:
        table = self.table
        query = select(table).where(_waiting(table)).order_by(table.c.id).limit(limit)
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
                select(table.c.created_at).where(_waiting(table)).order_by(table.c.id).limit(1)
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

    # -- rows set aside ------------------------------------------------------------------

    async def failed_count(self) -> int:
        """How many rows are set aside as failed."""
        table = self.table
        async with self.engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(table).where(table.c.failed_at.is_not(None))
            )
        return int(count or 0)

    async def failed(self, limit: int) -> list[dict[str, Any]]:
        """The oldest ``limit`` failed rows: ``id``, ``message_id``, ``channel``,
        ``message_key``, ``attempts``, ``last_error``, ``created_at``, ``failed_at``."""
        table = self.table
        columns = [
            table.c[name]
            for name in (
                "id",
                "message_id",
                "channel",
                "message_key",
                "attempts",
                "last_error",
                "created_at",
                "failed_at",
            )
        ]
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(*columns)
                .where(table.c.failed_at.is_not(None))
                .order_by(table.c.id)
                .limit(limit)
            )
            return [dict(row._mapping) for row in rows]

    async def retry_failed(self, message_ids: Collection[str] | None) -> int:
        """Put failed rows (those of ``message_ids``, or all) back in line with their
        attempts at 0; returns how many."""
        table = self.table
        query = update(table).where(table.c.failed_at.is_not(None))
        if message_ids is not None:
            if not message_ids:
                return 0
            query = query.where(table.c.message_id.in_(list(message_ids)))
        async with self.engine.begin() as conn:
            result = await conn.execute(query.values(failed_at=None, attempts=0))
        return int(result.rowcount or 0)
