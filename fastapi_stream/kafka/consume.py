"""Consuming from Kafka: a :class:`KafkaSubscription` per subscriber, driven by the core.

``fetch`` takes from per-partition buffers (:mod:`~fastapi_stream.kafka.offsets`) what may
run now, keeping each partition's order: with one worker (or batches) a partition hands out
nothing while one of its records is unsettled or handed back for a retry; with several
workers the same holds per key of a partition. ``settle`` marks records finished and wakes
a committer (one commit in flight at a time); ``redeliver`` puts records back at their
place; ``close`` commits what is finished and leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.protocol.group import LeaveGroupRequest

from fastapi_stream.core.message import StreamMessage
from fastapi_stream.core.transport import Subscription, SubscriptionSpec
from fastapi_stream.kafka.offsets import Partitions
from fastapi_stream.kafka.records import KafkaMessage, incoming, quietly, stop_client
from fastapi_stream.kafka.routing import subscription_pattern, subscription_topics

__all__ = ["KafkaSubscription"]

logger = logging.getLogger("fastapi_stream.kafka")

FETCH_WAIT_MS = 500  # the longest wait of one fetch from the broker
_IDLE = 1.0  # fetch returns [] after this long without records, as the core expects
#: Offsets handed out above a partition's commit point after which it hands out nothing
#: more until the record holding the commit back is settled.
_MAX_BACKLOG = 10_000
#: How often a pattern subscription looks for new matching topics (aiokafka's default of
#: five minutes would leave a new ``orders.{region}`` topic unread for that long).
_PATTERN_METADATA_MAX_AGE_MS = 3_000


class KafkaSubscription(Subscription, ConsumerRebalanceListener):  # type: ignore[misc]
    """One subscriber's ``AIOKafkaConsumer`` (built from the aiokafka ``settings``), its
    partitions, and with a group a committer task; it is the group's rebalance listener."""

    ordered = True  # a partition's order holds across retries
    settle_each = True  # settling marks offsets in memory; the committer follows

    def __init__(
        self,
        settings: Mapping[str, Any],
        spec: SubscriptionSpec,
        *,
        known_topics: set[str],
        leave_lock: asyncio.Lock,
    ) -> None:
        options, settings = spec.options, {**settings}
        if subscription_pattern(spec) is not None and not options.get("partitions"):
            age = settings.get("metadata_max_age_ms", _PATTERN_METADATA_MAX_AGE_MS)
            settings["metadata_max_age_ms"] = min(age, _PATTERN_METADATA_MAX_AGE_MS)
        self.client = AIOKafkaConsumer(
            **settings,
            group_id=spec.group,
            enable_auto_commit=False,
            max_poll_records=max(1, spec.prefetch),
        )
        earliest = settings.get("auto_offset_reset") == "earliest"
        self.partitions = Partitions(self.client, spec.group, known_topics, earliest)
        self.ledgers = self.partitions.ledgers
        self.spec, self.leave_lock = spec, leave_lock
        self.user_listener = options.get("listener")
        self.revoke_timeout = float(options.get("revoke_timeout", 5.0))
        self.prefetch = max(1, spec.prefetch)
        self.by_key = spec.max_workers > 1 and not spec.batch  # one record per key at a time
        self.max_records = int(options.get("max_records") or self.prefetch)
        self.batch_timeout = float(options.get("batch_timeout_ms") or 0) / 1000
        self._wake = asyncio.Event()  # records arrived, settled or handed back
        self._commit_wanted = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Subscribe to the topics or the pattern (with a group, through its rebalancing),
        or take the given partitions; return once the consumer owns partitions and knows
        where each starts (so a message published right after is received), or after
        ``assignment_timeout`` seconds."""
        client, spec = self.client, self.spec
        partitions = spec.options.get("partitions")
        pattern = None if partitions else subscription_pattern(spec)
        try:
            await client.start()
            if partitions:
                topic = spec.channel.template
                client.assign(
                    [
                        TopicPartition(*(p if isinstance(p, tuple) else (topic, p)))
                        for p in partitions
                    ]
                )
            elif pattern is not None:
                client.subscribe(pattern=pattern.pattern, listener=self if spec.group else None)
            else:
                client.subscribe(subscription_topics(spec), listener=self if spec.group else None)
            # A pattern that matches nothing yet: new matching topics are read from their start.
            if pattern is None or any(map(pattern.match, self.partitions.known_topics)):
                await self._wait_assigned(bool(partitions))
        except BaseException:
            await stop_client(client)
            raise
        if spec.group is not None:
            self._committer = asyncio.create_task(self._commit_when_wanted())

    async def _wait_assigned(self, manual: bool) -> None:
        timeout = float(self.spec.options.get("assignment_timeout", 30.0))
        try:
            async with asyncio.timeout(timeout):
                if self.spec.group is not None and not manual:
                    await self.partitions.assigned.wait()
                    return
                # aiokafka assigns a group-less consumer itself, without telling anyone.
                while not self.client.assignment():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                await self.partitions.sync()
        except TimeoutError:
            logger.warning(
                "kafka subscriber %s got no partitions within %.0fs; it goes on joining",
                self.spec.channel,
                timeout,
            )

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self.partitions.assign(assigned)
        if self.user_listener is not None:
            await self.user_listener.on_partitions_assigned({(t, p) for t, p in assigned})
        self._wake.set()

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        """Hand out nothing more of ``revoked``; give their records in flight
        ``revoke_timeout`` seconds, commit what is finished and forget them. Records still
        running then are delivered again by the next owner."""
        ledgers = self.partitions.close(revoked)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0 if self._closing else self.revoke_timeout):
                while any(ledger.inflight for ledger in ledgers.values()):
                    self._wake.clear()
                    await self._wake.wait()
        await self.partitions.commit(ledgers)
        for ledger in ledgers.values():
            ledger.closed = True
        if self.user_listener is not None and revoked:
            await self.user_listener.on_partitions_revoked({(t, p) for t, p in revoked})

    # -- the core's side ------------------------------------------------------------------

    async def fetch(self, limit: int) -> Sequence[StreamMessage]:
        limit = min(limit, self.max_records) if self.spec.batch else limit
        loop = asyncio.get_running_loop()
        idle_until = loop.time() + _IDLE
        fill_until = 0.0  # a batch waits up to batch_timeout_ms to fill up
        while True:
            buffered = sum(len(ledger.buffer) for ledger in self.ledgers.values())
            filling = False
            if self.batch_timeout and 0 < buffered < limit:
                fill_until = fill_until or loop.time() + self.batch_timeout
                filling = loop.time() < fill_until
            if not filling and (ready := self._take(limit)):
                return ready
            remaining = (fill_until if filling else idle_until) - loop.time()
            if remaining <= 0:
                return []
            await self._wait(remaining, self.prefetch - buffered)

    async def _wait(self, timeout: float, room: int) -> None:
        """Fetch into the buffers (while they have ``room``) until records arrive, one is
        settled or handed back, or ``timeout`` runs out. Client errors reach the core."""
        self._wake.clear()
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if room > 0:
            wait_ms = max(1, min(FETCH_WAIT_MS, int(timeout * 1000)))
            waiters.append(
                asyncio.ensure_future(self.client.getmany(timeout_ms=wait_ms, max_records=room))
            )
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if room <= 0 or not waiters[1].done() or waiters[1].cancelled():
            return
        batches = waiters[1].result()  # taken even if it finished as it was cancelled
        if self.spec.group is None:
            for tp in await self.partitions.sync(resolve=False):
                batches.pop(tp, None)  # fetched before the seek to its start
        for tp, records in batches.items():
            if (ledger := self.ledgers.get(tp)) is not None:  # else revoked meanwhile
                ledger.buffer.extend(r for r in records if ledger.accepts(r.offset))

    def _take(self, limit: int) -> list[StreamMessage]:
        """Up to ``limit`` buffered records that may run now, in partition order."""
        taken: list[StreamMessage] = []
        for ledger in list(self.ledgers.values()):
            buffer = ledger.buffer
            if not buffer or ledger.backlog >= _MAX_BACKLOG:
                continue
            if not self.by_key and ledger.inflight:
                continue  # an earlier record is unsettled, or waits for its retry
            busy, held = set(ledger.inflight.values()), []
            while buffer and len(taken) < limit:
                record = buffer.popleft()
                if self.by_key:
                    if record.key in busy:
                        held.append(record)  # its key waits: so do its later records
                        continue
                    busy.add(record.key)
                ledger.delivered(record.offset, record.key)
                message: KafkaMessage = incoming(record, KafkaMessage)
                message._ledger = ledger
                taken.append(message)
            buffer.extendleft(reversed(held))
        return taken

    async def settle(
        self, acked: Sequence[StreamMessage], rejected: Sequence[StreamMessage]
    ) -> None:
        for message in (*acked, *rejected):
            if not (ledger := cast(KafkaMessage, message)._ledger).closed:
                ledger.finish(message.raw_message.offset)
        self._wake.set()
        self._commit_wanted.set()

    async def redeliver(self, messages: Sequence[StreamMessage]) -> None:
        for message in messages:
            if not (ledger := cast(KafkaMessage, message)._ledger).closed:
                ledger.give_back(message.raw_message)
        self._wake.set()

    async def _commit_when_wanted(self) -> None:
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            await self.partitions.commit()

    async def close(self) -> None:
        """Commit what is finished (never past an unsettled record) and leave the group,
        one member at a time: some Kafka-protocol brokers (tansu 0.6) lose track of a
        group whose members leave at the same moment."""
        if self._closing:
            return
        self._closing = True
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        await quietly(self.partitions.commit())
        for ledger in self.ledgers.values():
            ledger.closed = True
        async with self.leave_lock:
            await quietly(leave_group(self.client))
            await stop_client(self.client)


async def leave_group(client: AIOKafkaConsumer) -> None:
    """Leave the group now, where aiokafka would not. aiokafka leaves only from generation
    1 on (Apache Kafka's first), but tansu numbers a group's first generation 0: its lone
    member never left, and a restarted replica waited out the old one's session timeout.
    Static members (``group_instance_id``) keep their place by design, so they stay."""
    coordinator: Any = getattr(client, "_coordinator", None)
    if getattr(coordinator, "generation", None) != 0 or coordinator._group_instance_id:
        return
    member = coordinator.member_id
    await coordinator.close()  # no more heartbeats or rejoins
    await client._client.send(
        coordinator.coordinator_id, LeaveGroupRequest(coordinator.group_id, member)
    )
