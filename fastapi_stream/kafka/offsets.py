"""Offset bookkeeping for one assigned partition: what was fetched, handed to the core,
finished or handed back, and how far the group may commit.

Kafka commits one number per partition: "everything before this offset is done". A
consumer that handles messages concurrently, or hands one back with a nack, must never
commit past a message that is not finished, even when later ones are (FastStream #1980,
faust #312). :class:`PartitionLedger` keeps that rule in one place, without any client
library, so it is tested on its own.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["PartitionLedger"]

#: ``done`` is pruned below the commit point once it holds more than this many offsets
#: (then more than twice what the last pruning left), so its upkeep stays O(1) per record.
_PRUNE_AT = 256


class PartitionLedger:
    """The state of one partition while this consumer owns it.

    ``buffer`` holds fetched records not yet delivered, in offset order. Delivered offsets
    are *in flight* until settled; a finished one (acked or rejected) is *done*; a nacked
    one waits to be fetched again after a seek back. The *committable* offset is the
    lowest offset not known to be finished: every record below it is done.
    """

    __slots__ = (
        "buffer",
        "closed",
        "committed",
        "done",
        "finished_max",
        "inflight",
        "nacked",
        "paused",
        "prune_at",
        "resume_at",
        "resume_handle",
        "rewind_to",
        "start",
    )

    def __init__(self, start: int | None = None, *, committed: int | None = None) -> None:
        #: The position the partition was assigned at (``None`` while unknown).
        self.start = start
        #: The offset last committed for this partition, if any.
        self.committed = committed
        self.buffer: deque[Any] = deque()
        self.inflight: set[int] = set()
        self.nacked: set[int] = set()
        #: Finished offsets at or above the committable one (to skip them after a seek).
        self.done: set[int] = set()
        self.finished_max = -1 if start is None else start - 1
        self.prune_at = _PRUNE_AT
        #: Where to seek back to once the partition resumes after a nack.
        self.rewind_to: int | None = None
        self.paused = False
        self.resume_at = 0.0
        self.resume_handle: Any = None
        #: The partition was revoked or the consumer stopped: settlements are ignored.
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"PartitionLedger(start={self.start}, committable={self.committable()}, "
            f"buffered={len(self.buffer)}, inflight={len(self.inflight)}, "
            f"nacked={len(self.nacked)})"
        )

    # -- fetching and delivering --------------------------------------------------------

    def accepts(self, offset: int) -> bool:
        """Whether a fetched record at ``offset`` should be delivered: not while the
        partition rewinds, and not if it is in flight or done already (a record fetched
        again after a seek back)."""
        if self.closed or self.rewind_to is not None:
            return False
        if offset in self.inflight or offset in self.done:
            return False
        if self.start is None:
            self.start = offset
            self.finished_max = offset - 1
        return offset >= self.start

    def delivered(self, offset: int) -> None:
        """``offset`` was handed to the core."""
        self.nacked.discard(offset)
        self.inflight.add(offset)

    # -- settling -----------------------------------------------------------------------

    def finish(self, offset: int) -> None:
        """``offset`` is done for good (acked, or rejected)."""
        self.inflight.discard(offset)
        self.nacked.discard(offset)
        self.done.add(offset)
        if offset > self.finished_max:
            self.finished_max = offset
        if len(self.done) > self.prune_at:
            self.committable()  # prunes
            self.prune_at = max(_PRUNE_AT, 2 * len(self.done))

    def nack(self, offset: int) -> int:
        """``offset`` must be delivered again. Drops the buffer (it is fetched again
        after the seek) and returns the offset to seek back to."""
        self.inflight.discard(offset)
        self.nacked.add(offset)
        target = offset
        if self.buffer:
            target = min(target, self.buffer[0].offset)
            self.buffer.clear()
        if self.rewind_to is not None:
            target = min(target, self.rewind_to)
        self.rewind_to = target
        return target

    def drop_buffer(self) -> int:
        """Forget the records fetched but not delivered; returns how many there were."""
        count = len(self.buffer)
        self.buffer.clear()
        return count

    # -- committing ---------------------------------------------------------------------

    def committable(self) -> int | None:
        """The offset to commit: every record below it is finished. ``None`` while
        nothing is known about the partition."""
        candidates: list[int] = []
        if self.inflight:
            candidates.append(min(self.inflight))
        if self.nacked:
            candidates.append(min(self.nacked))
        if self.buffer:
            candidates.append(self.buffer[0].offset)
        if self.rewind_to is not None:
            candidates.append(self.rewind_to)
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
        """Offsets delivered above the committable point: in flight, nacked or done."""
        return len(self.inflight) + len(self.nacked) + len(self.done)
