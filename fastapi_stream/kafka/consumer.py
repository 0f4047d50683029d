"""The consuming side of the Kafka transport: one :class:`KafkaSubscription` per
subscriber, and the :class:`KafkaMessage` objects it hands to the core.

A subscription fetches records into per-partition buffers, hands them to the core one at
a time (or as batches), and commits for each partition the offset below which every
record is finished (:class:`~fastapi_stream.kafka.offsets.PartitionLedger`): after each
advance, when the group revokes a partition, and when the subscription stops. A nack
pauses the record's partition and seeks back to it after the retry delay, so the
partition keeps its order. With ``max_workers`` > 1, partitions, and keys within a
partition, run concurrently, each key one message at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaError,
)

from fastapi_stream.core import outbox
from fastapi_stream.core.message import Settlement, StreamMessage
from fastapi_stream.core.transport import Deliver, Subscription, SubscriptionSpec
from fastapi_stream.kafka.offsets import PartitionLedger
from fastapi_stream.kafka.options import AutoOffsetReset, Partition, RebalanceListener

__all__ = ["KafkaMessage", "KafkaSubscription", "message_key"]

logger = logging.getLogger("fastapi_stream.kafka")

#: Headers that carry the message's metadata, named as FastStream names them.
CONTENT_TYPE = "content-type"
CORRELATION_ID = "correlation_id"
REPLY_TO = "reply_to"
MESSAGE_ID = "message_id"
ENVELOPE = frozenset({CONTENT_TYPE, CORRELATION_ID, REPLY_TO, MESSAGE_ID})

#: How long one fetch waits for records before the loop checks whether it should stop.
FETCH_WAIT_MS = 500
#: Pause after a consumer error before fetching again (no hot loop while the broker is down).
ERROR_BACKOFF = 1.0
#: Bound on housekeeping that must not hang a shutdown (final commit, consumer stop).
HOUSEKEEPING_TIMEOUT = 5.0
#: Offsets delivered above the commit point after which a partition stops delivering
#: until the message holding the commit back is settled.
_MAX_BACKLOG = 10_000
#: A stopped subscription waits this long for unsettled messages before its final commit.
_SETTLE_TIMEOUT = 30.0
#: A record whose results could not be published is delivered again after this pause.
_RESULTS_RETRY_DELAY = 1.0
#: How often a pattern subscription looks for new matching topics (aiokafka's default of
#: five minutes would leave a new ``orders.{region}`` topic unread for that long).
_PATTERN_METADATA_MAX_AGE_MS = 3_000


def reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value is not None else ""


def split_headers(
    raw: Iterable[tuple[str, bytes]] | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """(user headers, envelope headers) of a record; a repeated key keeps its last value."""
    headers: dict[str, str] = {}
    envelope: dict[str, str] = {}
    for key, value in raw or ():
        (envelope if key in ENVELOPE else headers)[key] = _text(value)
    return headers, envelope


def incoming(record: ConsumerRecord, cls: type[StreamMessage] = StreamMessage) -> Any:
    """A ``cls`` built from the record: its value (a null one, a tombstone, is an empty
    body), its headers, and the metadata FastStream-style envelope headers carry."""
    headers, envelope = split_headers(record.headers)
    value = record.value
    message = cls.__new__(cls)
    StreamMessage.__init__(
        message,
        value if value is not None else b"",
        channel=record.topic,
        headers=headers,
        # Stable across redeliveries: the retry budget counts by it.
        message_id=envelope.get(MESSAGE_ID) or f"{record.topic}-{record.partition}-{record.offset}",
        correlation_id=envelope.get(CORRELATION_ID),
        reply_to=envelope.get(REPLY_TO),
        content_type=envelope.get(CONTENT_TYPE),
        raw_message=record,
    )
    return message


def full_match(pattern: str) -> re.Pattern[str]:
    """A user's topic regex, matched against whole topic names (as Kafka does)."""
    return re.compile(f"(?:{pattern})\\Z")


def subscription_pattern(spec: SubscriptionSpec) -> re.Pattern[str] | None:
    pattern = spec.options.get("pattern")
    if pattern:
        return full_match(pattern)
    return spec.channel.regex


def subscription_topics(spec: SubscriptionSpec) -> list[str]:
    topics = [spec.channel.template, *spec.options.get("topics", ())]
    return list(dict.fromkeys(topics))


def topic_partitions(topic: str, partitions: Sequence[Partition]) -> list[TopicPartition]:
    result = []
    for partition in partitions:
        if isinstance(partition, int):
            result.append(TopicPartition(topic, partition))
        else:
            result.append(TopicPartition(partition[0], partition[1]))
    return result


async def quietly(awaitable: Any) -> None:
    """Housekeeping on the way out: bounded, and never raising."""
    try:
        async with asyncio.timeout(HOUSEKEEPING_TIMEOUT):
            await awaitable
    except Exception as exc:
        logger.debug("kafka housekeeping failed: %s", reason(exc))


async def stop_client(client: Any) -> None:
    """Stop an aiokafka producer or consumer within the housekeeping bound. One that
    hangs (a broker gone, a group that cannot be left) has its connections closed anyway,
    so no socket outlives the app."""
    try:
        async with asyncio.timeout(HOUSEKEEPING_TIMEOUT):
            await client.stop()
        return
    except Exception as exc:
        logger.debug("stopping a kafka client failed: %s", reason(exc))
    connections = getattr(client, "_client", None) or getattr(client, "client", None)
    if connections is not None:
        await quietly(connections.close())


class KafkaMessage(StreamMessage):
    """A record from Kafka; ``raw_message`` is aiokafka's ``ConsumerRecord``.

    ``ack`` and ``reject`` let the partition's committed offset move past the record
    (once every record before it is finished too); ``nack`` pauses the partition and
    seeks back to the record after ``delay`` seconds. Kafka keeps no delivery count, so
    ``delivery_attempt`` is ``None`` and retries are counted in-process by ``message_id``.
    """

    __slots__ = ("_consumer", "_lane", "_ledger")
    _consumer: KafkaSubscription
    _ledger: PartitionLedger
    _lane: Any

    @classmethod
    def of(
        cls,
        record: ConsumerRecord,
        consumer: KafkaSubscription,
        ledger: PartitionLedger,
        lane: Any,
    ) -> KafkaMessage:
        message: KafkaMessage = incoming(record, cls)
        message._consumer = consumer
        message._ledger = ledger
        message._lane = lane
        return message

    @property
    def key(self) -> bytes | None:
        return cast(bytes | None, self.raw_message.key)

    @property
    def partition(self) -> int:
        return cast(int, self.raw_message.partition)

    @property
    def offset(self) -> int:
        return cast(int, self.raw_message.offset)

    @property
    def timestamp_ms(self) -> int:
        return cast(int, self.raw_message.timestamp)

    async def _ack(self) -> None:
        consumer = self._consumer
        results = outbox.take(consumer.outbox_owner)
        if results:
            consumer.settle_when_sent(self, results)
        else:
            consumer.settle(self, Settlement.ACK)

    async def _nack(self, delay: float) -> None:
        self._consumer.settle(self, Settlement.NACK, delay)

    async def _reject(self) -> None:
        self._consumer.settle(self, Settlement.REJECT)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's rebalance callbacks, forwarded to the subscription."""

    def __init__(self, consumer: KafkaSubscription) -> None:
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self.consumer.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self.consumer.on_assigned(assigned)


class KafkaSubscription(Subscription):
    """One subscription: an ``AIOKafkaConsumer``, a task that fetches into per-partition
    buffers, a task that hands buffered records to the core, and (with a group) a task
    that commits what is finished."""

    def __init__(
        self,
        client: AIOKafkaConsumer,
        spec: SubscriptionSpec,
        deliver: Deliver,
        *,
        known_topics: set[str],
        user_listener: RebalanceListener | None,
        revoke_timeout: float,
        leave_lock: asyncio.Lock,
        default_reset: AutoOffsetReset,
        outbox_owner: object = None,
    ) -> None:
        self.client = client
        #: The transport: results published from handlers of this subscription wait in its
        #: outbox, and each record is settled once its results are confirmed.
        self.outbox_owner = outbox_owner
        self.spec = spec
        self.group = spec.group
        self._deliver = deliver
        self.known_topics = known_topics
        self.user_listener = user_listener
        self.revoke_timeout = revoke_timeout
        self.earliest = spec.options.get("auto_offset_reset", default_reset) == "earliest"
        self.leave_lock = leave_lock
        self.name = spec.channel.template
        self.ledgers: dict[TopicPartition, PartitionLedger] = {}
        self.prefetch = max(1, spec.prefetch)
        self.concurrent = spec.max_workers > 1
        self.max_records = int(spec.options.get("max_records") or self.prefetch)
        self.batch_timeout = float(spec.options.get("batch_timeout_ms") or 0) / 1000
        self.buffered = 0
        self.busy_lanes: set[Any] = set()
        self.assigned = asyncio.Event()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._settled = asyncio.Event()
        self._commit_wanted = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._stopped = False
        self._closing = False
        self._force = asyncio.Event()
        self._last_error = 0.0
        self._fetch_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._finish_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        settings: Mapping[str, Any],
        spec: SubscriptionSpec,
        deliver: Deliver,
        *,
        known_topics: set[str],
        leave_lock: asyncio.Lock,
        outbox_owner: object = None,
    ) -> KafkaSubscription:
        """Start a consumer for ``spec`` with the aiokafka ``settings``, and return once
        it owns its partitions and knows where each starts (so a message published right
        after is received), or after ``assignment_timeout`` seconds."""
        options = spec.options
        settings = {**settings}
        if subscription_pattern(spec) is not None and not options.get("partitions"):
            settings["metadata_max_age_ms"] = min(
                settings.get("metadata_max_age_ms", _PATTERN_METADATA_MAX_AGE_MS),
                _PATTERN_METADATA_MAX_AGE_MS,
            )
        client = AIOKafkaConsumer(
            **settings,
            group_id=spec.group,
            enable_auto_commit=False,
            max_poll_records=max(1, spec.prefetch),
        )
        subscription = cls(
            client,
            spec,
            deliver,
            known_topics=known_topics,
            user_listener=options.get("listener"),
            revoke_timeout=float(options.get("revoke_timeout", 5.0)),
            leave_lock=leave_lock,
            default_reset=settings.get("auto_offset_reset", "latest"),
            outbox_owner=outbox_owner,
        )
        try:
            await client.start()
            subscription._consume()
            await subscription._wait_assigned()
        except BaseException:
            await stop_client(client)
            raise
        subscription.start()
        return subscription

    def _consume(self) -> None:
        """Subscribe to the topics or the pattern (with a group, through the group's
        rebalancing), or take the given partitions."""
        client, spec = self.client, self.spec
        options = spec.options
        partitions = options.get("partitions")
        if partitions:
            client.assign(topic_partitions(spec.channel.template, partitions))
            return
        listener = _Listener(self) if spec.group is not None else None
        pattern = subscription_pattern(spec)
        if pattern is not None:
            client.subscribe(pattern=pattern.pattern, listener=listener)
        else:
            client.subscribe(subscription_topics(spec), listener=listener)

    async def _wait_assigned(self) -> None:
        """Return once the consumer owns partitions and knows where it starts, so that a
        message published right after ``subscribe`` is received; a group that takes
        longer than ``assignment_timeout`` seconds is logged and left to finish joining."""
        spec = self.spec
        timeout = float(spec.options.get("assignment_timeout", 30.0))
        manual = bool(spec.options.get("partitions"))
        pattern = None if manual else subscription_pattern(spec)
        if pattern is not None and not any(pattern.match(t) for t in self.known_topics):
            return  # nothing to read yet: new matching topics are read from their start
        try:
            async with asyncio.timeout(timeout):
                if spec.group is not None and not manual:
                    await self.assigned.wait()
                    return
                # aiokafka assigns a group-less consumer itself, without telling anyone.
                while not self.client.assignment():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                await self.sync_assignment()
        except TimeoutError:
            logger.warning(
                "kafka subscriber %s got no partitions within %.0fs; it goes on joining",
                spec.channel,
                timeout,
            )

    def start(self) -> None:
        name = self.name
        self._dispatch_task = asyncio.create_task(self._dispatch(), name=f"kafka deliver {name}")
        self._fetch_task = asyncio.create_task(self._fetch(), name=f"kafka fetch {name}")
        if self.group is not None:
            self._commit_task = asyncio.create_task(self._committer(), name=f"kafka commit {name}")

    # -- assignment ---------------------------------------------------------------------

    async def on_assigned(self, assigned: Collection[TopicPartition]) -> None:
        """A group gave us ``assigned``: find where each partition starts, and commit the
        start of a partition the group never committed, so that the partition never
        skips a record when it moves to another member."""
        ledgers = await self.open_ledgers(assigned)
        fresh = {
            tp: ledger.start
            for tp, ledger in ledgers.items()
            if ledger.committed is None and ledger.start is not None
        }
        if fresh:
            try:
                async with asyncio.timeout(HOUSEKEEPING_TIMEOUT):
                    await self.client.commit(fresh)
                for tp in fresh:
                    ledgers[tp].committed = fresh[tp]
            except (KafkaError, TimeoutError) as exc:
                logger.warning("could not commit the start offsets of %s: %s", self.name, exc)
        if self.user_listener is not None:
            await self.user_listener.on_partitions_assigned({(t, p) for t, p in assigned})
        self.assigned.set()
        self._wake.set()

    async def open_ledgers(
        self, tps: Collection[TopicPartition], *, resolve: bool = True
    ) -> dict[TopicPartition, PartitionLedger]:
        """Track ``tps`` from where they start: the group's committed offset; else the
        beginning for a topic created after the subscriber started, or with
        ``auto_offset_reset="earliest"``; else the end. Without ``resolve`` a partition of a
        known topic starts at its first record fetched.

        Starts are looked up with ListOffsets and set with ``seek``: aiokafka's own
        position reset waits for its fetcher, which may wait for us to consume.
        """
        committed: dict[TopicPartition, int | None] = dict.fromkeys(tps)
        from_start = [tp for tp in tps if tp.topic not in self.known_topics or self.earliest]
        try:
            async with asyncio.timeout(HOUSEKEEPING_TIMEOUT):
                if self.group is not None:
                    for tp in tps:
                        committed[tp] = await self.client.committed(tp)
                uncommitted = [tp for tp in tps if committed[tp] is None]
                beginning = [tp for tp in uncommitted if tp in from_start]
                end = [tp for tp in uncommitted if tp not in from_start] if resolve else []
                starts: dict[TopicPartition, int] = {
                    tp: offset for tp, offset in committed.items() if offset is not None
                }
                if beginning:
                    starts.update(await self.client.beginning_offsets(beginning))
                if end:
                    starts.update(await self.client.end_offsets(end))
        except (KafkaError, TimeoutError, IllegalStateError) as exc:
            logger.warning("could not find where %s starts: %s", self.name, reason(exc))
            starts = {tp: offset for tp, offset in committed.items() if offset is not None}
        ledgers = {}
        for tp in tps:
            start = starts.get(tp)
            if start is not None:
                with contextlib.suppress(IllegalStateError):
                    self.client.seek(tp, start)
            ledgers[tp] = self.ledgers[tp] = PartitionLedger(start, committed=committed[tp])
        self.known_topics.update(tp.topic for tp in tps)
        return ledgers

    async def on_revoked(self, revoked: Collection[TopicPartition]) -> None:
        """The group takes ``revoked`` away: stop delivering them, give their in-flight
        messages ``revoke_timeout`` seconds, commit what is finished, and forget them.
        Messages still running then are delivered again to the next owner."""
        ledgers = {tp: self.ledgers.pop(tp) for tp in revoked if tp in self.ledgers}
        for ledger in ledgers.values():
            self._forget_buffer(ledger)
            if ledger.resume_handle is not None:
                ledger.resume_handle.cancel()
        if not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.revoke_timeout):
                    while any(ledger.inflight for ledger in ledgers.values()):
                        self._settled.clear()
                        await self._settled.wait()
        await self._commit(ledgers)
        for ledger in ledgers.values():
            ledger.closed = True
        if self.user_listener is not None and revoked:
            await self.user_listener.on_partitions_revoked({(t, p) for t, p in revoked})

    async def sync_assignment(self, *, resolve: bool = True) -> set[TopicPartition]:
        """Without a group aiokafka assigns partitions itself and tells nobody: open a
        ledger for each new partition, close those gone. Returns the new partitions that
        were sought to their start."""
        current = self.client.assignment()
        for tp in [tp for tp in self.ledgers if tp not in current]:
            ledger = self.ledgers.pop(tp)
            self._forget_buffer(ledger)
            ledger.closed = True
        new = {tp for tp in current if tp not in self.ledgers}
        opened = await self.open_ledgers(new, resolve=resolve) if new else {}
        if current:
            self.assigned.set()
        return {tp for tp, ledger in opened.items() if ledger.start is not None}

    def _forget_buffer(self, ledger: PartitionLedger) -> None:
        self.buffered -= ledger.drop_buffer()
        self._room.set()

    # -- fetching -----------------------------------------------------------------------

    async def _fetch(self) -> None:
        while not self._stopped:
            room = self.prefetch - self.buffered
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                batches = await self.client.getmany(timeout_ms=FETCH_WAIT_MS, max_records=room)
                if self.group is None:
                    for tp in await self.sync_assignment(resolve=False):
                        batches.pop(tp, None)  # fetched before the seek to its start
            except ConsumerStoppedError:
                return
            except (KafkaError, OSError) as exc:
                self._log_error("fetching", exc)
                await asyncio.sleep(ERROR_BACKOFF)
                continue
            self._buffer(batches)

    def _buffer(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        added = False
        for tp, records in batches.items():
            ledger = self.ledgers.get(tp)
            if ledger is None:
                continue  # revoked meanwhile
            for record in records:
                if ledger.accepts(record.offset):
                    ledger.buffer.append(record)
                    self.buffered += 1
                    added = True
        if added:
            self._wake.set()

    def _log_error(self, doing: str, exc: BaseException) -> None:
        """One line per error streak every few seconds, never a flood."""
        now = time.monotonic()
        if now - self._last_error > 10.0:
            logger.warning("kafka subscriber %s: %s failed: %s", self.name, doing, reason(exc))
        self._last_error = now

    # -- delivering ---------------------------------------------------------------------

    def _lane(self, ledger: PartitionLedger, record: ConsumerRecord) -> Any:
        """Messages of one lane run one at a time: one key of one partition (or all the
        partition's records without key) when the core runs several workers."""
        return (record.topic, record.partition, record.key)

    def _ready(self, ledger: PartitionLedger) -> bool:
        return (
            bool(ledger.buffer)
            and ledger.rewind_to is None
            and not ledger.closed
            and ledger.backlog < _MAX_BACKLOG
        )

    def _take(self, ledger: PartitionLedger) -> tuple[ConsumerRecord, Any] | None:
        """The next record of ``ledger`` that may be delivered now, removed from its buffer."""
        if not self.concurrent:
            return ledger.buffer.popleft(), None
        for index, record in enumerate(ledger.buffer):
            lane = self._lane(ledger, record)
            if lane not in self.busy_lanes:
                del ledger.buffer[index]
                return record, lane
        return None

    def _message(self, record: ConsumerRecord, ledger: PartitionLedger, lane: Any) -> KafkaMessage:
        self.buffered -= 1
        ledger.delivered(record.offset)
        if lane is not None:
            self.busy_lanes.add(lane)
        return KafkaMessage.of(record, self, ledger, lane)

    async def _dispatch(self) -> None:
        try:
            if self.spec.batch:
                await self._dispatch_batches()
            else:
                await self._dispatch_single()
        except asyncio.CancelledError:
            pass  # the core cancelled a handler at its graceful timeout
        except Exception:
            logger.exception("kafka subscriber %s stopped delivering", self.name)

    async def _dispatch_single(self) -> None:
        while not self._stopped:
            self._wake.clear()
            progressed = False
            for ledger in list(self.ledgers.values()):
                # A few records per partition per round: fair, and each one is checked
                # against what a nack or a revoke changed meanwhile.
                for _ in range(64):
                    if self._stopped or not self._ready(ledger):
                        break
                    taken = self._take(ledger)
                    if taken is None:
                        break
                    record, lane = taken
                    await self._deliver_with_results([self._message(record, ledger, lane)])
                    self._room.set()
                    progressed = True
            if not progressed and not self._stopped:
                await self._wake.wait()

    async def _dispatch_batches(self) -> None:
        while not self._stopped:
            self._wake.clear()
            if self.batch_timeout and 0 < self.buffered < self.max_records:
                # Give the batch a chance to fill up.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.batch_timeout):
                        while self.buffered < self.max_records and not self._stopped:
                            self._wake.clear()
                            await self._wake.wait()
            batch: list[StreamMessage] = []
            for ledger in list(self.ledgers.values()):
                if self.concurrent and ledger.inflight:
                    continue  # one batch per partition at a time keeps its order
                while len(batch) < self.max_records and self._ready(ledger):
                    batch.append(self._message(ledger.buffer.popleft(), ledger, None))
            if batch:
                await self._deliver_with_results(batch)
                self._room.set()
            elif not self._stopped:
                await self._wake.wait()

    async def _deliver_with_results(self, messages: list[StreamMessage]) -> None:
        """Deliver ``messages``; a sequential subscription lets the handlers' results go
        out without waiting, each record settled once its own results are confirmed (see
        core/outbox.py), so the next record is handled meanwhile."""
        if self.concurrent or self.outbox_owner is None:
            await self._deliver(messages)
            return
        with outbox.collecting(self.outbox_owner) as results:
            await self._deliver(messages)
        if results:
            # Published after the record was settled (ACK_FIRST, a manual ack): confirm
            # them now, as a publish without an outbox would have.
            failed = [
                r
                for r in await asyncio.gather(*results, return_exceptions=True)
                if isinstance(r, BaseException)
            ]
            if failed:
                logger.error(
                    "kafka subscriber %s: %d result(s) of an already settled message were "
                    "not published: %s",
                    self.name,
                    len(failed),
                    reason(failed[0]),
                )

    # -- settling -----------------------------------------------------------------------

    def settle_when_sent(self, message: KafkaMessage, results: list[asyncio.Future[Any]]) -> None:
        """Ack ``message`` once every one of its ``results`` is confirmed; if one failed,
        hand the record back (delivered again after a pause), since its results may be
        missing."""
        remaining = len(results)

        def sent(_: asyncio.Future[Any]) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining:
                return
            failure = next(filter(None, map(_failure, results)), None)
            if failure is None:
                self.settle(message, Settlement.ACK)
                return
            logger.warning(
                "kafka subscriber %s: a result of record %s-%d@%d was not published (%s); "
                "the record is handled again",
                self.name,
                message.raw_message.topic,
                message.partition,
                message.offset,
                failure,
            )
            self.settle(message, Settlement.NACK, _RESULTS_RETRY_DELAY)

        for result in results:
            result.add_done_callback(sent)

    def settle(self, message: KafkaMessage, how: Settlement, delay: float = 0.0) -> None:  # type: ignore[override]  # legacy, replaced by the port
        ledger = message._ledger
        if message._lane is not None:
            self.busy_lanes.discard(message._lane)
        if ledger.closed:
            return  # revoked or stopped: the next owner delivers it again
        offset = message.offset
        if how is Settlement.NACK:
            self.buffered -= len(ledger.buffer)
            ledger.nack(offset)
            self._room.set()
            self._pause(message.raw_message, ledger, delay)
        else:
            ledger.finish(offset)
            if self.group is not None:
                self._commit_wanted.set()
        self._settled.set()
        self._wake.set()

    def _pause(self, record: ConsumerRecord, ledger: PartitionLedger, delay: float) -> None:
        """Stop fetching the record's partition, and seek back after ``delay`` seconds."""
        tp = TopicPartition(record.topic, record.partition)
        if not ledger.paused:
            try:
                self.client.pause(tp)
            except (IllegalStateError, KafkaError):
                return  # no longer assigned
            ledger.paused = True
        loop = asyncio.get_running_loop()
        resume_at = loop.time() + max(0.0, delay)
        if ledger.resume_handle is not None:
            if resume_at <= ledger.resume_at:
                return
            ledger.resume_handle.cancel()
        ledger.resume_at = resume_at
        ledger.resume_handle = loop.call_at(resume_at, self._resume, tp, ledger)

    def _resume(self, tp: TopicPartition, ledger: PartitionLedger) -> None:
        ledger.resume_handle = None
        if ledger.closed or self._stopped or ledger.rewind_to is None:
            return
        try:
            self.client.seek(tp, ledger.rewind_to)
            self.client.resume(tp)
        except (IllegalStateError, KafkaError) as exc:
            logger.debug("could not seek back on %s: %s", tp, exc)
            return
        ledger.rewind_to = None
        ledger.paused = False

    # -- committing ---------------------------------------------------------------------

    async def _committer(self) -> None:
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            await self._commit(self.ledgers)

    async def _commit(self, ledgers: Mapping[TopicPartition, PartitionLedger]) -> None:
        """Commit, for each partition, the offset below which every record is finished."""
        if self.group is None:
            return
        async with self._commit_lock:
            chosen: dict[TopicPartition, tuple[PartitionLedger, int]] = {}
            for tp, ledger in list(ledgers.items()):
                offset = ledger.to_commit()
                if offset is not None and not ledger.closed:
                    chosen[tp] = (ledger, offset)
            if not chosen:
                return
            offsets = {tp: offset for tp, (_, offset) in chosen.items()}
            try:
                async with asyncio.timeout(HOUSEKEEPING_TIMEOUT):
                    await self.client.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # A rebalance took the partitions: their next owner starts from the last
                # commit and delivers the difference again.
                logger.info("kafka subscriber %s: commit skipped: %s", self.name, reason(exc))
                return
            except (KafkaError, OSError, TimeoutError) as exc:
                self._log_error("committing offsets", exc)
                return
            for ledger, offset in chosen.values():
                if ledger.committed is None or offset > ledger.committed:
                    ledger.committed = offset

    # -- stopping -----------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop fetching and delivering. In the background, once the core settled what
        it got, commit what is finished and leave the group."""
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        self._room.set()
        if self._fetch_task is not None:
            self._fetch_task.cancel()
        self._finish_task = asyncio.create_task(self._finish(), name=f"kafka stop {self.name}")

    async def close(self) -> None:
        """Finish now: the core is done with this subscription's messages."""
        await self.stop()
        self._force.set()
        assert self._finish_task is not None
        await asyncio.wait([self._finish_task])

    async def _finish(self) -> None:
        if self._dispatch_task is not None:
            await asyncio.wait([self._dispatch_task])
        force = asyncio.ensure_future(self._force.wait())
        try:
            async with asyncio.timeout(_SETTLE_TIMEOUT):
                while any(ledger.inflight for ledger in self.ledgers.values()):
                    self._settled.clear()
                    settled = asyncio.ensure_future(self._settled.wait())
                    await asyncio.wait([settled, force], return_when=asyncio.FIRST_COMPLETED)
                    settled.cancel()
                    if force.done():
                        break
        except TimeoutError:
            pass
        finally:
            force.cancel()
        self._closing = True
        await self._commit(self.ledgers)
        for ledger in self.ledgers.values():
            ledger.closed = True
            if ledger.resume_handle is not None:
                ledger.resume_handle.cancel()
        tasks = [task for task in (self._fetch_task, self._commit_task) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # One member leaves at a time: some Kafka-protocol brokers (tansu 0.6) lose track
        # of a group whose members leave at the same moment.
        async with self.leave_lock:
            await stop_client(self.client)


def _failure(result: asyncio.Future[Any]) -> str | None:
    """Why ``result`` (a publish) failed, ``None`` if it succeeded."""
    if result.cancelled():
        return "cancelled"
    exc = result.exception()
    return None if exc is None else reason(exc)


def message_key(message: StreamMessage) -> bytes | None:
    """The Kafka key of ``message``, from a real broker or from the test broker (where
    it is the ``key=`` the message was published with)."""
    if isinstance(message, KafkaMessage):
        return message.key
    key = getattr(message.raw_message, "options", {}).get("key")
    return key.encode() if isinstance(key, str) else cast(bytes | None, key)
