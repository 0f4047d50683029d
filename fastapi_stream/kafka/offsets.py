"""Partition assignment and offset bookkeeping: the partitions a subscription owns, where
each starts, which of its records are buffered, in flight or finished, and how far the
group may commit.

Kafka commits one number per partition: "everything before this offset is done". A
consumer that handles records concurrently, or hands one back for a retry, must never
commit past a record that is not finished, even when later ones are (FastStream #1980,
faust #312). :class:`PartitionLedger` keeps that rule, without any client, so it is
tested on its own; :class:`Partitions` opens and closes ledgers and commits them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import deque
from collections.abc import Collection, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from fastapi_stream.core.errors import reason

__all__ = ["PartitionLedger", "Partitions"]

logger = logging.getLogger("fastapi_stream.kafka")

#: ``done`` is pruned below the commit point once it holds more than this many offsets
#: (then more than twice what the last pruning left), so its upkeep stays O(1) per record.
_PRUNE_AT = 256
#: Bound on a commit, an offset lookup or a client stop: a stop or rebalance never hangs.
HOUSEKEEPING_TIMEOUT = 5.0


class PartitionLedger:
    """One partition while this consumer owns it. ``buffer``: records not handed to the
    core, in offset order (fetched ones, and those handed back for a retry, at their
    place). ``inflight``: offsets handed out and not settled, with their record's key.
    ``done``: finished (acked or rejected) offsets above the committable one, the lowest
    offset not known to be finished."""

    def __init__(self, start: int | None = None, *, committed: int | None = None) -> None:
        self.start = start  # where the partition was assigned (None: its first record)
        self.committed = committed  # the offset last committed, if any
        self.buffer: deque[Any] = deque()
        self.inflight: dict[int, Any] = {}
        self.done: set[int] = set()
        self.finished_max = -1 if start is None else start - 1
        self.prune_at = _PRUNE_AT
        self.closed = False  # revoked, or the consumer stopped: settlements are ignored

    def accepts(self, offset: int) -> bool:
        """Whether a fetched record at ``offset`` is new (not before the start, not in
        flight or done already)."""
        if self.closed or offset in self.inflight or offset in self.done:
            return False
        if self.start is None:
            self.start, self.finished_max = offset, offset - 1
        return offset >= self.start

    def delivered(self, offset: int, key: Any = None) -> None:
        self.inflight[offset] = key

    def finish(self, offset: int) -> None:
        """``offset`` is done for good (acked, or rejected)."""
        self.inflight.pop(offset, None)
        self.done.add(offset)
        self.finished_max = max(self.finished_max, offset)
        if len(self.done) > self.prune_at:
            self.committable()  # prunes
            self.prune_at = max(_PRUNE_AT, 2 * len(self.done))

    def give_back(self, record: Any) -> None:
        """``record`` goes back, before every later record: the partition keeps its order."""
        if self.inflight.pop(record.offset, self) is self:
            return  # not in flight: settled already
        if not self.buffer or record.offset < self.buffer[0].offset:
            self.buffer.appendleft(record)
        else:
            offsets = [r.offset for r in self.buffer]
            self.buffer.insert(bisect.bisect(offsets, record.offset), record)

    def committable(self) -> int | None:
        """The offset below which every record is finished; ``None`` while unknown."""
        candidates = [min(self.inflight)] if self.inflight else []
        if self.buffer:
            candidates.append(self.buffer[0].offset)
        if self.start is not None:
            candidates.append(self.finished_max + 1)
        if not candidates:
            return None
        point = min(candidates)
        if self.done and min(self.done) < point:
            self.done = {offset for offset in self.done if offset >= point}
        return point

    def to_commit(self) -> int | None:
        """The committable offset if it moved past the last commit, else ``None``."""
        point = self.committable()
        if point is None or (self.committed is not None and point <= self.committed):
            return None
        return point

    @property
    def backlog(self) -> int:
        """Offsets handed out above the committable point: in flight or done."""
        return len(self.inflight) + len(self.done)


class Partitions:
    """The partitions one consumer owns, a ledger each, and the group's commits.

    A partition starts at the group's committed offset; else at the beginning for a topic
    created after the subscriber started, or with ``auto_offset_reset="earliest"``; else
    at the end. Starts are looked up and set with ``seek``: aiokafka's own reset waits for
    its fetcher, which may wait for us.
    """

    def __init__(
        self, client: AIOKafkaConsumer, group: str | None, known_topics: set[str], earliest: bool
    ) -> None:
        self.client, self.group, self.known_topics = client, group, known_topics
        self.earliest = earliest
        self.ledgers: dict[TopicPartition, PartitionLedger] = {}
        self.assigned = asyncio.Event()
        self._commit_lock = asyncio.Lock()

    async def open(
        self, tps: Collection[TopicPartition], *, resolve: bool = True
    ) -> dict[TopicPartition, PartitionLedger]:
        """Track ``tps`` from where they start; without ``resolve``, a partition of a known
        topic without committed offset starts at its first record fetched."""
        client = self.client
        committed: dict[TopicPartition, int | None] = dict.fromkeys(tps)
        try:
            async with asyncio.timeout(HOUSEKEEPING_TIMEOUT):
                if self.group is not None:
                    for tp in tps:
                        committed[tp] = await client.committed(tp)
                starts = {tp: offset for tp, offset in committed.items() if offset is not None}
                new = [tp for tp in tps if committed[tp] is None]
                first = [tp for tp in new if self.earliest or tp.topic not in self.known_topics]
                last = [tp for tp in new if tp not in first] if resolve else []
                starts.update(await client.beginning_offsets(first) if first else {})
                starts.update(await client.end_offsets(last) if last else {})
        except (KafkaError, TimeoutError, IllegalStateError) as exc:
            logger.warning("could not find where %s start: %s", sorted(tps), reason(exc))
            starts = {tp: offset for tp, offset in committed.items() if offset is not None}
        for tp, start in starts.items():
            with contextlib.suppress(IllegalStateError):
                client.seek(tp, start)
        opened = {tp: PartitionLedger(starts.get(tp), committed=committed[tp]) for tp in tps}
        self.ledgers.update(opened)
        self.known_topics.update(tp.topic for tp in tps)
        return opened

    async def assign(self, tps: Collection[TopicPartition]) -> None:
        """The group gave us ``tps``. The start of a partition the group never committed
        is committed at once (a new ledger's commit point is its start), so it never skips
        a record when it moves to another member."""
        await self.commit(await self.open(tps))
        self.assigned.set()

    def close(self, tps: Collection[TopicPartition]) -> dict[TopicPartition, PartitionLedger]:
        """Hand out nothing more of ``tps``; returns their ledgers, still open for
        settling and committing."""
        closed = {tp: self.ledgers.pop(tp) for tp in tps if tp in self.ledgers}
        for ledger in closed.values():
            ledger.buffer.clear()
        return closed

    async def sync(self, *, resolve: bool = True) -> set[TopicPartition]:
        """Without a group aiokafka assigns partitions itself and tells nobody: open a
        ledger for each new partition, close those gone. Returns the new partitions that
        were sought to their start."""
        current = self.client.assignment()
        for ledger in self.close([tp for tp in self.ledgers if tp not in current]).values():
            ledger.closed = True
        new = {tp for tp in current if tp not in self.ledgers}
        opened = await self.open(new, resolve=resolve) if new else {}
        if current:
            self.assigned.set()
        return {tp for tp, ledger in opened.items() if ledger.start is not None}

    async def commit(self, ledgers: Mapping[TopicPartition, PartitionLedger] | None = None) -> None:
        """Commit, for each partition, the offset below which every record is finished."""
        if self.group is None:
            return
        async with self._commit_lock:
            chosen = {}
            for tp, ledger in list((self.ledgers if ledgers is None else ledgers).items()):
                if not ledger.closed and (offset := ledger.to_commit()) is not None:
                    chosen[tp] = (ledger, offset)
            if chosen and await self._send({tp: offset for tp, (_, offset) in chosen.items()}):
                for ledger, offset in chosen.values():
                    ledger.committed = max(offset, ledger.committed or offset)

    async def _send(self, offsets: dict[TopicPartition, int]) -> bool:
        try:
            async with asyncio.timeout(HOUSEKEEPING_TIMEOUT):
                await self.client.commit(offsets)
            return True
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took the partitions: their next owner starts from the last
            # commit and delivers the difference again.
            logger.info("kafka group %s: commit skipped: %s", self.group, reason(exc))
        except (KafkaError, OSError, TimeoutError) as exc:
            logger.warning("kafka group %s: commit failed: %s", self.group, reason(exc))
        return False
