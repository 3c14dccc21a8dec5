"""Lag per tier from raw offsets, including Kafka's awkward cases."""

from __future__ import annotations

import pytest
from imagegen_operator.scaling.lag import (
    LagSnapshot,
    PartitionLag,
    compute_lag,
    partition_lag,
    stalled_for,
    track_stalls,
)

TIERS = {"turbo": "t.turbo", "fast": "t.fast", "relax": "t.relax"}


def offsets(topic: str, values: list[int]) -> dict[tuple[str, int], int]:
    return {(topic, p): v for p, v in enumerate(values)}


@pytest.mark.parametrize(
    ("end", "committed", "begin", "lag"),
    [
        (10, 4, 0, 6),  # plain backlog
        (10, 10, 0, 0),  # caught up
        (10, None, 0, 10),  # no commit: the group starts from the earliest offset
        (10, None, 7, 3),  # no commit, retention deleted the first 7
        (10, -1, 0, 10),  # Kafka's "no offset" marker
        (10, 2, 5, 5),  # committed below the log start: consumer resets to earliest
        (10, 12, 0, 0),  # committed beyond the end (topic recreated): clamped, never negative
        (0, None, 0, 0),  # empty partition, no commit
    ],
)
def test_partition_lag(end: int, committed: int | None, begin: int, lag: int) -> None:
    assert partition_lag(end, committed, begin) == lag


def test_tiers_total_and_busiest() -> None:
    ends = {
        **offsets("t.turbo", [10, 10, 10]),
        **offsets("t.fast", [5, 5]),
        **offsets("t.relax", [0, 0, 0, 0]),
    }
    committed: dict[tuple[str, int], int | None] = {
        **offsets("t.turbo", [0, 10, 0]),
        **offsets("t.fast", [4, 5]),
        **offsets("t.relax", [0, 0, 0, 0]),
    }
    snap = compute_lag(TIERS, ends, committed, {}, read_ms=3.5)
    assert snap.by_tier == {"turbo": 20, "fast": 1, "relax": 0}
    assert snap.total == 21
    assert snap.partitions_total == 9
    assert snap.busiest_tier_partitions == 3  # turbo has the lag
    assert snap.read_ms == 3.5
    assert snap.missing_commits == 0
    turbo = snap.tiers[0]
    assert (turbo.tier, turbo.partitions, turbo.max_partition_lag) == ("turbo", 3, 10)
    assert snap.describe() == "21 (turbo 20, fast 1, relax 0)"
    assert len(snap.partitions) == 9
    assert snap.partitions[0] == PartitionLag("t.turbo", 0, 10, 0, 10, "turbo")


def test_group_that_never_committed_counts_from_log_start() -> None:
    ends = {**offsets("t.turbo", [4, 6]), **offsets("t.fast", [3])}
    begins = {("t.turbo", 1): 2}
    snap = compute_lag({"turbo": "t.turbo", "fast": "t.fast"}, ends, {}, begins)
    assert snap.by_tier == {"turbo": 8, "fast": 3}
    assert snap.missing_commits == 3
    assert all(p.committed is None for p in snap.partitions)


def test_skewed_partitions_keep_max_partition_lag() -> None:
    ends = offsets("t.turbo", [1000, 0, 0, 0, 0, 0])
    snap = compute_lag({"turbo": "t.turbo"}, ends, offsets("t.turbo", [0] * 6), {})
    assert snap.total == 1000
    assert snap.tiers[0].max_partition_lag == 1000
    assert snap.tiers[0].partitions == 6


def test_negative_lag_clamps_and_does_not_offset_other_partitions() -> None:
    ends = offsets("t.turbo", [5, 5])
    committed: dict[tuple[str, int], int | None] = {("t.turbo", 0): 50, ("t.turbo", 1): 1}
    snap = compute_lag({"turbo": "t.turbo"}, ends, committed, {})
    assert [p.lag for p in snap.partitions] == [0, 4]
    assert snap.total == 4


def test_busiest_tier_ties_and_idle() -> None:
    ends = {**offsets("a", [3, 0]), **offsets("b", [1, 1, 1])}
    snap = compute_lag({"a": "a", "b": "b"}, ends, {}, {})
    assert snap.busiest_tier_partitions == 3  # tie on lag 3: the wider tier
    idle = compute_lag({"a": "a", "b": "b"}, ends, {**ends}, {})
    assert idle.total == 0
    assert idle.busiest_tier_partitions == 3  # no lag: the widest tier


def test_tier_whose_topic_has_no_partitions_and_empty_input() -> None:
    snap = compute_lag({"turbo": "t.turbo"}, {}, {}, {})
    assert snap == LagSnapshot(
        tiers=snap.tiers,
        total=0,
        partitions_total=0,
        busiest_tier_partitions=0,
        read_ms=0.0,
        missing_commits=0,
    )
    assert snap.tiers[0].partitions == 0
    assert compute_lag({}, {}, {}, {}).busiest_tier_partitions == 0


def _parts(committed: list[int | None], lags: list[int]) -> list[PartitionLag]:
    return [
        PartitionLag("t", i, 100, c, lag)
        for i, (c, lag) in enumerate(zip(committed, lags, strict=True))
    ]


def _snap(parts: list[PartitionLag]) -> LagSnapshot:
    return LagSnapshot(tiers=(), total=sum(p.lag for p in parts), partitions_total=len(parts),
                       busiest_tier_partitions=len(parts), read_ms=0.0, missing_commits=0,
                       partitions=tuple(parts))


@pytest.mark.parametrize(
    ("prev", "cur", "stuck"),
    [
        # partition 1 has a backlog and did not move while 0 moved: stuck
        (_parts([10, 50], [90, 50]), _parts([20, 50], [80, 50]), [1]),
        # nothing moved: both stuck (the operator only asks while workers are ready; a group
        # without ready workers is "waiting for workers", told by the Ready condition)
        (_parts([10, 50], [90, 50]), _parts([10, 50], [90, 50]), [0, 1]),
        # did not move but has no backlog: fine
        (_parts([10, 100], [90, 0]), _parts([20, 100], [80, 0]), []),
        # all moved
        (_parts([10, 50], [90, 50]), _parts([20, 60], [80, 40]), []),
        # never committed, others moved, backlog: stuck (no consumer takes it)
        (_parts([10, None], [90, 100]), _parts([20, None], [80, 100]), [1]),
        # a partition first seen now has not been stuck for any time yet
        (_parts([10], [90]), [*_parts([10], [90]), PartitionLag("t", 1, 5, None, 5)], [0]),
    ],
)
def test_stalled(prev: list[PartitionLag], cur: list[PartitionLag], stuck: list[int]) -> None:
    since = track_stalls({}, _snap(prev), now=0.0)
    since = track_stalls(since, _snap(cur), now=200.0)
    found = stalled_for(since, _snap(cur), now=200.0, threshold=100.0)
    assert sorted(s.partition for s in found) == stuck


def test_track_stalls_and_report_after_the_threshold() -> None:
    topic = "imagegen.ns.p.turbo"

    def snap(committed: list[int], end: list[int]) -> object:
        return compute_lag({"turbo": topic}, {(topic, i): e for i, e in enumerate(end)},
                           {(topic, i): c for i, c in enumerate(committed)},
                           {(topic, i): 0 for i in range(len(end))})

    s0 = snap([0, 0], [10, 10])
    since = track_stalls({}, s0, now=0.0)  # type: ignore[arg-type]
    # Partition 1 moves, partition 0 does not.
    s1 = snap([0, 5], [10, 10])
    since = track_stalls(since, s1, now=60.0)  # type: ignore[arg-type]
    assert stalled_for(since, s1, now=60.0) == []  # type: ignore[arg-type]
    s2 = snap([0, 9], [10, 10])
    since = track_stalls(since, s2, now=130.0)  # type: ignore[arg-type]
    assert [str(s) for s in stalled_for(since, s2, now=130.0)] == [  # type: ignore[arg-type]
        f"{topic}:0 (lag 10, no progress for 130s)"]
    # It moves: the clock starts again; drained partitions are forgotten.
    s3 = snap([1, 10], [10, 10])
    since = track_stalls(since, s3, now=140.0)  # type: ignore[arg-type]
    assert stalled_for(since, s3, now=140.0) == []  # type: ignore[arg-type]
    assert list(since) == [(topic, 0)]
    # A low tier's own wait (maxWaitSeconds) raises its threshold.
    assert stalled_for(since, s3, now=300.0, per_topic={topic: 400.0}) == []  # type: ignore[arg-type]
    assert stalled_for(since, s3, now=300.0) != []  # type: ignore[arg-type]
