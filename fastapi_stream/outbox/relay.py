"""The relay: the task that copies committed outbox rows to the broker.

It runs while the broker runs (started by the broker's startup hooks, stopped by its
shutdown hooks). Each cycle claims a batch of rows in order, publishes them with the
broker transport's ``publish_many`` (the publish middlewares already ran when the rows
were written), marks them sent and commits. Between cycles it waits for a wake-up: a
commit of an outbox write in this process, a PostgreSQL ``NOTIFY`` from another one
(LISTEN on an asyncpg connection of the engine's), or the poll interval. While the
broker or the database fails it waits with the router's :class:`~fastapi_stream.Backoff`.

A batch the broker fails to take is either an outage (the broker does not answer: a lost
connection, a timeout; nothing is counted, the relay waits and tries again) or about a
message (the broker answers and refuses it). Then the relay sends the batch's rows one
by one to find the refused ones; each refusal counts an attempt on its row and holds
back the rows behind it in its partition, and a row refused ``max_attempts`` times is
set aside as failed so that they flow again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_stream.core.backoff import Backoff, Reconnecting
from fastapi_stream.core.broker import StreamBroker
from fastapi_stream.core.errors import (
    BrokerNotConnected,
    ConfigurationError,
    PayloadError,
    StreamError,
    TransportError,
)
from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.outbox.metrics import OutboxMetrics
from fastapi_stream.outbox.store import Batch, BrokerFailed, OutboxStore, takes_key

__all__ = ["Relay"]

#: With LISTEN working, the relay still polls this many poll intervals apart (a
#: notification sent while the listening connection was being replaced is lost).
_LISTEN_POLL_FACTOR = 10
#: Seconds between attempts to LISTEN again after the listening connection failed.
_LISTEN_RETRY = 5.0
#: Seconds the startup hook waits for the table to be created.
_CREATE_TIMEOUT = 10.0
#: Seconds between lag measurements while the relay is idle.
_LAG_INTERVAL = 5.0
#: Seconds the relay waits for the broker's answer to a ping after a batch failed.
_PING_TIMEOUT = 3.0
#: Words of a broker error that mean it was not reached or did not answer in time.
_OUTAGE_WORDS = (
    "timeout",
    "timed out",
    "did not confirm",
    "not connected",
    "not reachable",
    "connection",
    "unreachable",
)


#: Errors raised before the broker was asked, about the message or its options.
_MESSAGE_ERRORS = (ConfigurationError, PayloadError, TypeError, ValueError, LookupError)


class MessageRefused(Exception):
    """The broker answers but refused rows of a batch (not an outage): the relay backs
    off and tries them again, up to ``max_attempts`` each."""


def looks_like_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from, or during) says the broker was not
    reached or did not answer in time, rather than that it refused the message."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, BrokerNotConnected | ConnectionError | TimeoutError):
            return True
        if isinstance(error, OSError) and not isinstance(error, StreamError):
            return True
        text = str(error).lower()
        if any(word in text for word in _OUTAGE_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


class Relay:
    """Sends the rows of one outbox through one broker; ``start()`` and ``stop()``."""

    def __init__(
        self,
        store: OutboxStore,
        broker: StreamBroker,
        *,
        create_table: bool,
        batch_size: int,
        max_attempts: int,
        poll_interval: float,
        prune_interval: float,
        listen: bool,
        backoff: Backoff | None,
        metrics: OutboxMetrics | None,
        logger: logging.Logger,
    ) -> None:
        self.store = store
        self.broker = broker
        #: Whether the table is known to exist (made by the relay, or not ours to make).
        self.table_ready = not create_table
        self.create_table = create_table
        #: Whether the table is known to have the current schema (made or checked).
        self.schema_ready = False
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.prune_interval = prune_interval
        self.listen = listen and store.postgresql
        self.backoff = backoff
        self.metrics = metrics
        self.logger = logger
        #: Rows sent since the relay was made, for tests and the bench.
        self.sent_total = 0
        #: Rows this relay set aside as failed since it was made.
        self.failed_total = 0
        #: The last failure while it lasts (``None`` once a cycle succeeded).
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._listener: AsyncConnection | None = None
        self._listen_after = 0.0
        self._next_prune = 0.0
        self._next_lag = 0.0
        self._attempts: Reconnecting | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def failing(self) -> bool:
        """Whether the last cycles failed (an outage, a refusal or the database)."""
        return self._attempts is not None and self._attempts.failing

    @property
    def unavailable(self) -> bool:
        """Whether the relay fails for want of the broker or the database (readiness):
        a broker refusing a message makes the relay wait, not the service unready."""
        return self.failing and not (self.last_error or "").startswith("message:")

    def wake(self) -> None:
        """Look for rows now (an outbox write was committed)."""
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        self._wake = asyncio.Event()
        self._attempts = Reconnecting(
            f"outbox relay {self.store.table.name}",
            self.backoff or self.broker.reconnect,
            self.logger,
        )
        if not self.schema_ready:
            try:  # now, so that the first writes need not make it
                await asyncio.wait_for(self._prepare(), _CREATE_TIMEOUT)
            except Exception as exc:
                self.logger.warning(
                    "outbox %s: the table is not ready yet (%s)", self.store.table.name, exc
                )
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.store.table.name}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Let the batch being sent finish for up to ``timeout`` seconds, then cancel it
        (its rows stay unsent and go out with the next relay)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self.wake()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait({task}, timeout=timeout)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self._unlisten()

    async def _run(self) -> None:
        attempts = self._attempts
        assert attempts is not None and self._wake is not None
        while not self._stopping:
            try:
                if not self.schema_ready:
                    await self._prepare()
                sent = await self._cycle()
                await self._housekeeping()  # when due, busy or not
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, MessageRefused):
                    reason = "message"
                elif isinstance(exc, BrokerFailed):
                    reason = "broker"
                else:
                    reason = "database"
                self.last_error = f"{reason}: {exc}"
                if self.metrics is not None:
                    self.metrics.relay_error(reason)
                await attempts.failed(exc)
                continue
            attempts.succeeded()
            self.last_error = None
            if not sent:  # else more rows may wait (a full batch, other partitions)
                await self._idle()

    async def _prepare(self) -> None:
        """Make (or upgrade) the table, or check that a migration made it."""
        if self.create_table:
            await self.store.create()
        else:
            await self.store.check()
        self.table_ready = self.schema_ready = True

    async def _cycle(self) -> int:
        """One batch; returns how many rows went out. Raises :class:`BrokerFailed` for
        an outage and :class:`MessageRefused` for rows refused and not yet set aside
        (after marking what was sent), so that the relay backs off either way."""
        batch = await self.store.relay_batch(
            self._send,
            self.batch_size,
            is_outage=self._is_outage,
            max_attempts=self.max_attempts,
        )
        total = sum(batch.sent.values())
        if total:
            self.sent_total += total
            if self.metrics is not None:
                for channel, count in batch.sent.items():
                    self.metrics.sent(channel, count)
        self._report_refusals(batch)
        if batch.outage is not None:
            raise BrokerFailed(f"{type(batch.outage).__name__}: {batch.outage}")
        waiting = [refusal for refusal in batch.refused if not refusal.set_aside]
        if waiting:
            first = waiting[0]
            raise MessageRefused(
                f"{len(waiting)} message(s) refused by the broker, first {first.message_id} "
                f"to {first.channel!r} (attempt {first.attempts} of {self.max_attempts}): "
                f"{first.error}"
            )
        return total or len(batch.refused)

    def _report_refusals(self, batch: Batch) -> None:
        """One log line per row set aside (its message id and why, never its payload)."""
        name = self.store.table.name
        for refusal in batch.refused:
            if not refusal.set_aside:
                continue
            self.failed_total += 1
            self.logger.error(
                "outbox %s: message %s to %r set aside as failed after %d refusal(s): %s; "
                "the rows behind it are sent; retry it with outbox.retry_failed()",
                name,
                refusal.message_id,
                refusal.channel,
                refusal.attempts,
                refusal.error,
            )
            failed = getattr(self.metrics, "failed", None)
            if failed is not None:
                failed(refusal.channel, 1)

    async def _is_outage(self, exc: BaseException) -> bool:
        """Whether a failed publish is an outage (counts nothing) rather than the broker
        refusing a message (counts an attempt on it): an error that says so, or one
        after which the broker does not answer a ping."""
        if looks_like_outage(exc):
            return True
        if isinstance(exc, _MESSAGE_ERRORS) and not isinstance(exc, TransportError):
            return False  # raised before the broker was asked: about the message
        try:
            return not await self.broker.ping(_PING_TIMEOUT)
        except Exception:
            return True

    async def _send(self, messages: Sequence[OutgoingMessage]) -> None:
        transport = self.broker.transport
        if not takes_key(transport):  # the key only ordered the rows
            messages = [_keyless(message) for message in messages]
        await transport.publish_many(messages)

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.metrics is not None and now >= self._next_lag:
            self._next_lag = now + _LAG_INTERVAL
            self.metrics.lag(await self.store.lag())
        if self.store.keep_sent > 0 and now >= self._next_prune:
            self._next_prune = now + self.prune_interval
            pruned = await self.store.prune()
            if pruned:
                self.logger.debug("outbox %s: pruned %d sent row(s)", self.store.table.name, pruned)

    async def _idle(self) -> None:
        wake = self._wake
        assert wake is not None
        interval = self.poll_interval
        if self.listen:
            interval *= _LISTEN_POLL_FACTOR if await self._listening() else 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval)
        wake.clear()

    # -- PostgreSQL LISTEN ---------------------------------------------------------------

    async def _listening(self) -> bool:
        """Whether a connection LISTENs for this outbox's NOTIFY (set up when missing)."""
        listener = self._listener
        if listener is not None:
            try:
                driver = await _driver(listener)
                if not driver.is_closed():
                    return True
            except Exception as exc:
                self.logger.debug("outbox relay: the listening connection failed (%s)", exc)
            await self._unlisten()
        if time.monotonic() < self._listen_after:
            return False
        self._listen_after = time.monotonic() + _LISTEN_RETRY
        try:
            listener = await self.store.engine.connect()
            driver = await _driver(listener)
            if driver is None or not hasattr(driver, "add_listener"):
                await listener.close()
                self.listen = False  # not asyncpg: polling it is
                return False
            await driver.add_listener(self.store.notify_channel, self._notified)
        except Exception as exc:
            self.logger.warning("outbox relay: cannot LISTEN (%s); polling meanwhile", exc)
            return False
        self._listener = listener
        return True

    def _notified(self, *_: Any) -> None:
        self.wake()

    async def _unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # The connection goes, not back to the pool: it would keep listening there.
            with contextlib.suppress(Exception):
                await listener.invalidate()
            with contextlib.suppress(Exception):
                await listener.close()


def _keyless(message: OutgoingMessage) -> OutgoingMessage:
    if "key" not in message.options:
        return message
    options = {name: value for name, value in message.options.items() if name != "key"}
    return dataclasses.replace(message, options=options)


async def _driver(connection: AsyncConnection) -> Any:
    raw = await connection.get_raw_connection()
    return raw.driver_connection
