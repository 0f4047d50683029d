"""The commit rule on its own: a partition's committed offset never passes a record that
is not finished (FastStream #1980, faust #312), whatever order records finish in."""

from __future__ import annotations

from collections import namedtuple

from fastapi_stream.kafka.offsets import PartitionLedger

Record = namedtuple("Record", "offset")


def delivered(ledger: PartitionLedger, *offsets: int) -> None:
    for offset in offsets:
        assert ledger.accepts(offset)
        ledger.delivered(offset)


def test_nothing_known_commits_nothing() -> None:
    assert PartitionLedger().committable() is None
    assert PartitionLedger(start=7).committable() == 7


def test_commits_only_contiguous_finished_offsets() -> None:
    ledger = PartitionLedger(start=10)
    delivered(ledger, 10, 11, 12)
    ledger.finish(11)
    ledger.finish(12)
    assert ledger.committable() == 10  # 10 still runs: a later success never passes it
    ledger.finish(10)
    assert ledger.committable() == 13


def test_a_record_handed_back_holds_the_commit_and_goes_first() -> None:
    """A nacked record comes back (``give_back``) before the later ones already fetched,
    and the commit stays below it until it is finished."""
    ledger = PartitionLedger(start=0)
    delivered(ledger, 0, 1)
    ledger.buffer.extend([Record(2), Record(3)])
    ledger.finish(0)
    ledger.give_back(Record(1))
    assert [r.offset for r in ledger.buffer] == [1, 2, 3]  # delivered again, in order
    assert ledger.committable() == 1
    ledger.buffer.popleft()
    ledger.delivered(1)
    ledger.finish(1)
    assert ledger.committable() == 2


def test_a_record_handed_back_behind_a_blocked_buffer_keeps_offset_order() -> None:
    """With several workers a later record can be nacked while an earlier one still
    waits in the buffer (its key was busy): it goes back behind the waiting one."""
    ledger = PartitionLedger(start=0)
    ledger.buffer.extend([Record(4), Record(6)])
    delivered(ledger, 5)
    ledger.give_back(Record(5))
    assert [r.offset for r in ledger.buffer] == [4, 5, 6]
    assert ledger.committable() == 0  # nothing below 4 is known to be finished


def test_records_done_before_a_retry_are_not_delivered_again() -> None:
    ledger = PartitionLedger(start=0)
    delivered(ledger, 0, 1, 2)
    ledger.finish(1)  # another key, finished while 0 fails
    ledger.give_back(Record(0))
    assert not ledger.accepts(1)  # done already
    assert not ledger.accepts(2)  # still in flight
    assert ledger.committable() == 0
    ledger.buffer.popleft()
    ledger.delivered(0)
    ledger.finish(0)
    ledger.finish(2)
    assert ledger.committable() == 3
    assert ledger.done == set()  # pruned below the commit point


def test_rejected_records_count_as_finished_and_gaps_are_skipped() -> None:
    ledger = PartitionLedger(start=100)
    delivered(ledger, 100, 105)  # 101-104 are compacted away
    ledger.finish(105)
    ledger.finish(100)
    assert ledger.committable() == 106


def test_to_commit_reports_only_progress() -> None:
    ledger = PartitionLedger(start=3, committed=3)
    assert ledger.to_commit() is None
    delivered(ledger, 3)
    ledger.finish(3)
    assert ledger.to_commit() == 4
    ledger.committed = 4
    assert ledger.to_commit() is None


def test_unknown_start_is_taken_from_the_first_record() -> None:
    ledger = PartitionLedger()
    assert ledger.accepts(42)
    assert ledger.start == 42
    assert ledger.committable() == 42
    assert not ledger.accepts(41)


def test_bookkeeping_stays_small_without_commits() -> None:
    """A subscriber without a group never commits; its ledger must not grow with every
    record, or the partition would stop at the backlog limit."""
    ledger = PartitionLedger(start=0)
    for offset in range(50_000):
        assert ledger.accepts(offset)
        ledger.delivered(offset)
        ledger.finish(offset)
    assert ledger.backlog <= 256


def test_a_stuck_record_keeps_what_finished_after_it() -> None:
    ledger = PartitionLedger(start=0)
    delivered(ledger, 0)  # never settled
    for offset in range(1, 1_000):
        delivered(ledger, offset)
        ledger.finish(offset)
    assert ledger.committable() == 0
    assert ledger.backlog == 1_000  # the limit that stops delivering counts these
