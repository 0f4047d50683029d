"""``Outbox``: publish in the application's own database transaction.

::

    engine = create_async_engine("postgresql+asyncpg://...")
    router = StreamRouter("redis://...")
    outbox = Outbox(router, engine)
    order_events = outbox.publisher("orders", title="Order events")

    @router.post("/orders")
    async def create(order: Order, session: AsyncSession = Depends(get_session)) -> ...:
        async with session.begin():
            session.add(OrderRow(...))
            await order_events.publish(session, order, key=str(order.id))

The message is encoded (and passed through the broker's publish middlewares) at once,
and written as a row of the outbox table in ``session``'s transaction: a rollback leaves
nothing to send, a commit leaves a row that the relay publishes, at least once, with the
same message id, once the broker takes it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from fastapi_stream.core.backoff import Backoff
from fastapi_stream.core.broker import StreamBroker
from fastapi_stream.core.endpoint import CallRecorder
from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.core.middleware import chain_publish
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.health import add_readiness_check
from fastapi_stream.outbox.metrics import OutboxMetrics
from fastapi_stream.outbox.relay import Relay
from fastapi_stream.outbox.store import OutboxStore, row_values
from fastapi_stream.outbox.tables import DEFAULT_OUTBOX_TABLE, outbox_table
from fastapi_stream.router import StreamRouter

if TYPE_CHECKING:
    from unittest.mock import MagicMock

__all__ = ["Outbox", "OutboxPublisher"]

# session.info keys: the relays to wake when the session commits, the tables whose
# NOTIFY the transaction already carries (one per transaction is enough), and the
# publishes a test broker records once the transaction commits.
_WAKE = "fastapi_stream.outbox.wake"
_NOTIFIED = "fastapi_stream.outbox.notified"
_RECORD = "fastapi_stream.outbox.record"


class Outbox:
    """The transactional outbox of one table, relayed by ``router``'s broker.

    ``router`` is a :class:`~fastapi_stream.StreamRouter` with a broker (or a
    :class:`~fastapi_stream.StreamBroker`); the relay starts when its broker starts and
    stops before its connection closes. ``engine`` is the application's SQLAlchemy
    ``AsyncEngine`` (PostgreSQL with asyncpg; SQLite with aiosqlite for one process).

    ``table`` names the outbox table, created at startup (and, before that, in the first
    publishing transaction) unless ``create_table=False`` (then create it with
    :func:`~fastapi_stream.outbox.ddl`). Order is kept per channel; ``order="key"`` keeps
    it per channel and key instead (rows without a key: per channel), which lets several
    relays share one busy channel. The relay sends up to ``batch_size`` rows of up to
    ``partitions_per_batch`` partitions per transaction (on PostgreSQL; several relays
    each take partitions the others do not hold), polls every ``poll_interval`` seconds
    (on PostgreSQL it also LISTENs, and then polls ten times less often), waits with
    ``backoff`` (the router's ``reconnect`` by default) while the broker or the database
    fails, and deletes rows ``keep_sent`` seconds after they were sent (``0``: at once),
    checking every ``prune_interval`` seconds. A row the broker refuses while it answers
    (an error about the message, not an outage) is tried ``max_attempts`` times, holding
    back the rows behind it in its partition, then set aside as failed: kept, logged,
    counted (:meth:`failed_count`), sent again after :meth:`retry_failed`. Readiness
    fails while the relay fails, and when ``max_lag`` is given and the oldest unsent row
    is older. ``metrics`` receives rows sent, rows failed, relay errors and the lag.
    ``relay=False`` only writes (another process relays); make the table there with
    :meth:`create_table` or a migration.
    """

    def __init__(
        self,
        router: StreamRouter | StreamBroker,
        engine: AsyncEngine,
        *,
        table: str = DEFAULT_OUTBOX_TABLE,
        create_table: bool = True,
        order: Literal["channel", "key"] = "channel",
        batch_size: int = 100,
        partitions_per_batch: int = 4,
        max_attempts: int = 10,
        poll_interval: float = 1.0,
        keep_sent: float = 3600.0,
        prune_interval: float = 60.0,
        notify: bool = True,
        backoff: Backoff | None = None,
        max_lag: float | None = None,
        metrics: OutboxMetrics | None = None,
        relay: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        if order not in ("channel", "key"):
            raise ConfigurationError("Outbox(order=...) is 'channel' or 'key'")
        if (
            batch_size < 1
            or partitions_per_batch < 1
            or poll_interval <= 0
            or keep_sent < 0
            or prune_interval <= 0
            or max_attempts < 1
        ):
            raise ConfigurationError(
                "Outbox needs batch_size >= 1, partitions_per_batch >= 1, poll_interval > 0, "
                "keep_sent >= 0, prune_interval > 0 and max_attempts >= 1"
            )
        self.router = router if isinstance(router, StreamRouter) else None
        self.broker = router.broker if isinstance(router, StreamRouter) else router
        self.engine = engine
        self.table = outbox_table(table)
        self.order = order
        self.max_lag = max_lag
        self.store = OutboxStore(
            engine, self.table, keep_sent=keep_sent, partitions=partitions_per_batch
        )
        self.notify = notify and self.store.postgresql
        self.relay = Relay(
            self.store,
            self.broker,
            create_table=create_table,
            batch_size=batch_size,
            max_attempts=max_attempts,
            poll_interval=poll_interval,
            prune_interval=prune_interval,
            listen=notify,
            backoff=backoff,
            metrics=metrics,
            logger=logger or self.broker.logger,
        )
        self._relays = relay
        if relay:
            self.broker.startup_hooks.append(self.relay.start)
            self.broker.shutdown_hooks.append(self.relay.stop)
            add_readiness_check(self.broker, f"outbox:{table}", self._ready)

    def __repr__(self) -> str:
        return f"Outbox({self.table.name!r}, {self.broker!r})"

    def publisher(
        self,
        channel: str,
        *,
        headers: Mapping[str, str] | None = None,
        title: str | None = None,
        description: str | None = None,
        include_in_schema: bool = True,
        **options: Any,
    ) -> OutboxPublisher:
        """Declare ``channel`` as published through this outbox: it appears in the
        AsyncAPI document like any publisher; ``await pub.publish(session, message)``
        writes to the outbox with ``headers`` and ``options`` as defaults."""
        if self.router is not None:
            declared = self.router.publisher(
                channel,
                headers=headers,
                title=title,
                description=description,
                include_in_schema=include_in_schema,
                **options,
            )
        else:
            declared = self.broker.add_publisher(
                Publisher(
                    channel,
                    headers=headers,
                    title=title,
                    description=description,
                    include_in_schema=include_in_schema,
                    options=options,
                )
            )
        return OutboxPublisher(self, declared)

    async def publish(
        self,
        session: AsyncSession | AsyncConnection,
        message: Any,
        channel: str,
        *,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        **options: Any,
    ) -> str | None:
        """Write ``message`` for ``channel`` to the outbox in ``session``'s transaction;
        the relay publishes it once that transaction commits.

        The message is encoded and passed through the broker's publish middlewares now
        (a trace header is the request's), so the row holds the very bytes, headers and
        message id the broker will get. ``key`` orders messages per key with
        ``order="key"`` and is the broker's message key where it has one (Kafka, and
        the memory broker); elsewhere it only orders. ``options`` are the broker's
        publish options, kept as JSON and checked now where the transport declares
        them, so that a bad one raises here, in the caller's transaction. Returns the
        message id (``None`` if a middleware dropped the message).
        """
        outgoing = await self._write(
            session,
            message,
            channel,
            headers=headers,
            key=key,
            correlation_id=correlation_id,
            reply_to=reply_to,
            message_id=message_id,
            content_type=content_type,
            options=options,
        )
        return None if outgoing is None else outgoing.message_id

    async def _write(
        self,
        session: AsyncSession | AsyncConnection,
        message: Any,
        channel: str,
        *,
        headers: Mapping[str, str] | None,
        key: str | None,
        correlation_id: str | None,
        reply_to: str | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        options: dict[str, Any],
    ) -> OutgoingMessage | None:
        """:meth:`publish`; returns the message as written (``None``: dropped)."""
        if "key" in options:
            raise ConfigurationError(
                f"the outbox's key is its own argument (key=...), not a publish option of "
                f"the publisher of {channel!r}"
            )
        outgoing = self.broker.outgoing(
            message,
            channel,
            headers=headers,
            correlation_id=correlation_id,
            reply_to=reply_to,
            message_id=message_id,
            content_type=content_type,
            options=options,
        )
        captured: list[OutgoingMessage] = []

        async def capture(prepared: OutgoingMessage) -> None:
            captured.append(prepared)

        if self.broker.middlewares:
            await chain_publish(self.broker.middlewares, capture)(outgoing)
        else:
            captured.append(outgoing)
        if not captured:
            return None
        outgoing = captured[0]
        partition = channel if key is None or self.order == "channel" else f"{channel}\x1f{key}"
        values = row_values(outgoing, partition, key)
        if not self.relay.table_ready:
            await self.store.create_in(session)  # before the relay's first cycle made it
        await self.store.write(session, values, self._notify_once(session))
        if isinstance(session, AsyncSession) and self._relays:
            relays: weakref.WeakSet[Relay] = session.info.setdefault(_WAKE, weakref.WeakSet())
            relays.add(self.relay)
        return outgoing

    def _notify_once(self, session: AsyncSession | AsyncConnection) -> bool:
        """Whether this write sends the NOTIFY (the transaction's first on this table)."""
        if not self.notify:
            return False
        if not isinstance(session, AsyncSession):
            return True
        notified: set[str] = session.info.setdefault(_NOTIFIED, set())
        if self.table.name in notified:
            return False
        notified.add(self.table.name)
        return True

    async def create_table(self) -> None:
        """Create the outbox table unless it exists (the relay does so at startup)."""
        await self.store.create()
        self.relay.table_ready = True

    async def lag(self) -> float:
        """Seconds since the oldest unsent row was written (0 when none waits; rows set
        aside as failed do not count)."""
        return await self.store.lag()

    async def failed_count(self) -> int:
        """How many rows are set aside as failed (refused ``max_attempts`` times)."""
        return await self.store.failed_count()

    async def failed(self, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest ``limit`` rows set aside as failed, without their payload:
        ``id``, ``message_id``, ``channel``, ``message_key``, ``attempts``,
        ``last_error``, ``created_at`` and ``failed_at`` (seconds since the epoch)."""
        return await self.store.failed(limit)

    async def retry_failed(self, message_ids: Collection[str] | None = None) -> int:
        """Put the rows set aside as failed (those of ``message_ids``, or all) back in
        line, their attempts at 0, and wake the relay; returns how many. A retried row
        keeps its place (its ``id``): it goes out before the rows of its partition that
        are still unsent, after those sent while it was set aside."""
        count = await self.store.retry_failed(message_ids)
        if count:
            self.relay.wake()
        return count

    async def _ready(self) -> tuple[bool, dict[str, Any]]:
        relay = self.relay
        if not relay.schema_ready:  # lag and failures need the current schema
            details: dict[str, Any] = {"running": relay.running, "sent": relay.sent_total}
            details["error"] = relay.last_error or "the outbox table is not ready yet"
            return False, details
        lag = await self.store.lag()
        ready = relay.running and not relay.unavailable
        if self.max_lag is not None and lag > self.max_lag:
            ready = False
        details = {
            "running": relay.running,
            "lag_seconds": round(lag, 3),
            "sent": relay.sent_total,
            "failed": await self.store.failed_count(),
        }
        if relay.last_error is not None:
            details["error"] = relay.last_error
        return ready, details


class OutboxPublisher:
    """A channel declared with :meth:`Outbox.publisher`; ``publish(session, message)``.

    Under a test broker, ``mock`` is called with the decoded body of each publish whose
    transaction committed (a rolled back one is not recorded), as ``router.publisher``'s
    is, without waiting for the relay."""

    def __init__(self, outbox: Outbox, publisher: Publisher) -> None:
        self.outbox = outbox
        #: The declared publisher, for the AsyncAPI document.
        self.publisher = publisher

    @property
    def channel(self) -> str:
        return self.publisher.channel

    def __repr__(self) -> str:
        return f"OutboxPublisher({self.channel!r})"

    @property
    def mock(self) -> MagicMock:
        """Called with the decoded body of each committed publish under a test broker
        (the declared publisher's mock, reset when the test broker exits)."""
        return self.publisher.mock

    def reset(self) -> None:
        """Forget recorded publishes."""
        self.publisher.reset()

    async def publish(
        self,
        session: AsyncSession | AsyncConnection,
        message: Any,
        *,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
        correlation_id: str | None = None,
        **options: Any,
    ) -> str | None:
        """:meth:`Outbox.publish` to this channel, with the declared defaults."""
        declared = self.publisher
        options = {**declared.options, **options}
        if key is None:  # a key declared with the publisher is a default too
            key = options.pop("key", None)
        else:
            options.pop("key", None)
        outgoing = await self.outbox._write(
            session,
            message,
            declared.channel,
            headers={**declared.headers, **headers} if headers else declared.headers,
            key=key,
            correlation_id=correlation_id,
            options=options,
        )
        if outgoing is None:
            return None
        if self.outbox.broker.testing:
            self._record(session, (outgoing.body, outgoing.content_type))
        return outgoing.message_id

    def _record(
        self, session: AsyncSession | AsyncConnection, call: tuple[bytes, str | None]
    ) -> None:
        """Record ``call`` in the mock when ``session`` commits (at once without one)."""
        recorder = self.publisher._recorder
        if not isinstance(session, AsyncSession):
            recorder.record(call)
            return
        pending: list[tuple[CallRecorder, tuple[bytes, str | None]]]
        pending = session.info.setdefault(_RECORD, [])
        pending.append((recorder, call))


def _committed(session: Session) -> None:
    session.info.pop(_NOTIFIED, None)
    recorded = session.info.pop(_RECORD, None)
    if recorded:
        for recorder, call in recorded:
            recorder.record(call)
    relays = session.info.pop(_WAKE, None)
    if relays:
        for relay in relays:
            relay.wake()


def _rolled_back(session: Session) -> None:
    session.info.pop(_NOTIFIED, None)
    session.info.pop(_RECORD, None)
    session.info.pop(_WAKE, None)


# Once for every Session (the sync one inside each AsyncSession): a commit that wrote
# outbox rows wakes the relays of this process at once.
event.listen(Session, "after_commit", _committed)
event.listen(Session, "after_rollback", _rolled_back)
