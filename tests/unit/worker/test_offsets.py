"""Offset tracking: commit per partition only up to the first unfinished message."""

from __future__ import annotations

from imagegen_worker.offsets import OffsetTracker

P0, P1 = ("t.fast", 0), ("t.fast", 1)


def test_nothing_fetched_nothing_to_commit() -> None:
    assert OffsetTracker[tuple[str, int]]().committable() == {}


def test_commit_stops_at_the_first_unfinished_offset() -> None:
    t: OffsetTracker[tuple[str, int]] = OffsetTracker()
    for off in (10, 11, 12, 13):
        t.add(P0, off)
    t.done(P0, 11)
    t.done(P0, 13)
    assert t.committable() == {P0: 10}  # 10 unfinished: nothing past it is committed
    t.done(P0, 10)
    assert t.committable() == {P0: 12}
    t.done(P0, 12)
    assert t.committable() == {P0: 14}  # one past the last fetched


def test_partitions_are_independent() -> None:
    t: OffsetTracker[tuple[str, int]] = OffsetTracker()
    t.add(P0, 0)
    t.add(P1, 5)
    t.add(P1, 6)
    t.done(P1, 5)
    assert t.committable() == {P0: 0, P1: 6}
    assert t.committable([P1]) == {P1: 6}


def test_only_advances_are_returned_after_a_commit() -> None:
    t: OffsetTracker[tuple[str, int]] = OffsetTracker()
    t.add(P0, 0)
    t.done(P0, 0)
    t.committed(t.committable())
    assert t.committable() == {}
    t.add(P0, 1)
    assert t.committable() == {}  # 1 is unfinished: position 1 was already committed
    t.done(P0, 1)
    assert t.committable() == {P0: 2}


def test_revoked_partitions_are_forgotten_with_their_unfinished_offsets() -> None:
    t: OffsetTracker[tuple[str, int]] = OffsetTracker()
    for off in (3, 4, 5):
        t.add(P0, off)
    t.add(P1, 0)
    t.done(P0, 4)
    assert t.forget([P0]) == [3, 5]
    assert t.partitions() == [P1]
    t.done(P0, 3)  # late completion of revoked work: ignored
    assert t.committable() == {P1: 0}
    assert not t.is_pending(P0, 5) and t.is_pending(P1, 0)
    assert t.pending_count() == 1


def test_out_of_order_fetch_keeps_the_highest_position() -> None:
    t: OffsetTracker[tuple[str, int]] = OffsetTracker()
    t.add(P0, 7)
    t.add(P0, 2)
    t.done(P0, 7)
    t.done(P0, 2)
    assert t.committable() == {P0: 8}
