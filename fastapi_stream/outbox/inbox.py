"""``Inbox``: an idempotent consumer, so a redelivered message has its effect once.

::

    inbox = Inbox(engine)

    @router.subscriber("orders", group="billing", middlewares=[inbox])
    async def bill(order: Order, session: AsyncSession = Depends(inbox.session)) -> None:
        session.add(Invoice(order_id=order.id, amount=order.amount))

For each message the inbox opens a session and a transaction, records the message id
(per consumer) in the inbox table, runs the handler with that session and commits both
together. A message whose id is already recorded is acked without running the handler.
A handler that raises rolls the transaction back, so the failed attempt records nothing
and the retry (or dead-letter) policy goes on as without the inbox. Two deliveries of one
message at once: the second waits for the first's transaction on PostgreSQL and is then
skipped (or run, if the first rolled back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.message import StreamMessage
from fastapi_stream.core.middleware import ConsumeNext, Middleware
from fastapi_stream.observability.logging import current_message_context
from fastapi_stream.outbox.tables import DEFAULT_INBOX_TABLE, inbox_table

__all__ = ["Inbox"]

_session: ContextVar[AsyncSession | None] = ContextVar("fastapi_stream_inbox", default=None)


def _message_id(message: StreamMessage) -> str | None:
    return message.message_id


class Inbox(Middleware):
    """Record each processed message's id in the same transaction as the handler's writes.

    ``bind`` is an ``AsyncEngine`` or an ``async_sessionmaker`` (whose sessions the
    handlers get through the :meth:`session` dependency). ``consumer`` names whose
    processing is recorded (by default the handler's qualified name, so two handlers of
    one message each run once, and the replicas of one handler share the record).
    ``message_key`` picks the id to record (the message id by default; a message without
    one is processed without the inbox, with a warning). Records are deleted ``keep``
    seconds after they were made (checked every ``prune_interval`` seconds): a
    redelivery later than that runs the handler again.
    """

    def __init__(
        self,
        bind: AsyncEngine | async_sessionmaker[AsyncSession],
        *,
        table: str = DEFAULT_INBOX_TABLE,
        consumer: str | None = None,
        create_table: bool = True,
        keep: float = 7 * 24 * 3600.0,
        prune_interval: float = 3600.0,
        message_key: Callable[[StreamMessage], str | None] = _message_id,
        logger: logging.Logger | None = None,
    ) -> None:
        if isinstance(bind, AsyncEngine):
            self.sessions = async_sessionmaker(bind, expire_on_commit=False)
            engine: Any = bind
        else:
            self.sessions = bind
            engine = bind.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise ConfigurationError("Inbox needs an AsyncEngine or a sessionmaker bound to one")
        self.engine: AsyncEngine = engine
        self.table = inbox_table(table)
        self.consumer = consumer
        self.keep = keep
        self.prune_interval = prune_interval
        self.message_key = message_key
        self.logger = logger or logging.getLogger("fastapi_stream")
        #: Deliveries acked without running the handler (already processed).
        self.skipped = 0
        self._ready = not create_table
        self._next_prune = time.monotonic() + prune_interval
        self._pruning: asyncio.Task[None] | None = None

    async def session(self) -> AsyncSession:
        """The handler's session, in the transaction that records the message: a
        dependency, ``session: AsyncSession = Depends(inbox.session)``."""
        session = _session.get()
        if session is None:
            raise ConfigurationError(
                "inbox.session is for handlers whose subscriber has middlewares=[inbox]"
            )
        return session

    async def consume(self, message: StreamMessage, call_next: ConsumeNext) -> Any:
        key = self.message_key(message)
        if key is None:
            self.logger.warning(
                "message on %s has no id: processed without the inbox", message.channel
            )
            return await call_next(message)
        context = current_message_context()
        consumer = self.consumer or (context.subscriber if context else message.channel)
        if not self._ready:
            await self.create_table()
        self._maybe_prune()
        async with self.sessions() as session, session.begin():
            if not await self._record(session, consumer, key):
                self.skipped += 1
                self.logger.info(
                    "message %s was already processed by %s: acked without running it again",
                    key,
                    consumer,
                )
                return None
            token = _session.set(session)
            try:
                return await call_next(message)
            finally:
                _session.reset(token)

    async def _record(self, session: AsyncSession, consumer: str, key: str) -> bool:
        """Insert the record; ``False`` if it was there (committed) already."""
        values = {"consumer": consumer, "message_id": key, "processed_at": time.time()}
        name = self.engine.dialect.name
        if name == "postgresql":
            statement: Any = postgresql.insert(self.table).values(values).on_conflict_do_nothing()
        elif name == "sqlite":
            statement = sqlite.insert(self.table).values(values).on_conflict_do_nothing()
        elif name in ("mysql", "mariadb"):
            statement = mysql.insert(self.table).values(values).prefix_with("IGNORE")
        else:
            try:
                async with session.begin_nested():
                    await session.execute(insert(self.table).values(values))
            except IntegrityError:
                return False
            return True
        result = await session.execute(statement)
        return bool(getattr(result, "rowcount", 0))

    async def create_table(self) -> None:
        """Create the inbox table unless it exists."""
        async with self.engine.begin() as conn:
            await conn.run_sync(self.table.create, checkfirst=True)
        self._ready = True

    async def prune(self) -> int:
        """Delete records older than ``keep`` seconds; returns how many."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(self.table).where(self.table.c.processed_at < time.time() - self.keep)
            )
        return int(result.rowcount or 0)

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune or (self._pruning is not None and not self._pruning.done()):
            return
        self._next_prune = now + self.prune_interval
        self._pruning = asyncio.create_task(self._prune_quietly())

    async def _prune_quietly(self) -> None:
        try:
            await self.prune()
        except Exception as exc:
            self.logger.warning("inbox %s: pruning failed (%s)", self.table.name, exc)
