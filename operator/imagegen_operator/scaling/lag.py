"""Consumer lag per tier, computed from raw Kafka offsets. Pure: no Kafka client here.

Kafka edge cases handled on purpose:

* A partition the group never committed counts ``end - begin`` (the whole retained log): workers
  consume with ``auto_offset_reset="earliest"``, so a new group starts from the oldest message.
* A committed offset below the log start (retention deleted what the group had not read) is
  treated as the log start, since that is where the consumer resets to (earliest).
* A committed offset above the end (topic recreated, or a stale read racing a commit) clamps the
  lag to 0: lag is never negative.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    end_offset: int
    committed: int | None  # None: the group never committed on this partition
    lag: int
    tier: str = ""

    @property
    def key(self) -> TopicPartition:
        return (self.topic, self.partition)

    @property
    def first_pending(self) -> int:
        """Offset of the oldest message the group has not consumed (valid when lag > 0)."""
        return self.end_offset - self.lag


@dataclass(frozen=True)
class TierLag:
    tier: str
    lag: int
    partitions: int
    max_partition_lag: int


@dataclass(frozen=True)
class LagSnapshot:
    tiers: tuple[TierLag, ...]
    total: int
    partitions_total: int
    # Partition count of the tier with the most lag: more consumers than that cannot help it.
    busiest_tier_partitions: int
    read_ms: float
    missing_commits: int  # partitions without a committed offset (counted from the log start)
    partitions: tuple[PartitionLag, ...] = ()

    @property
    def by_tier(self) -> dict[str, int]:
        return {t.tier: t.lag for t in self.tiers}

    @property
    def lagging_partitions(self) -> int:
        """Partitions holding a backlog; 0 when per-partition detail is absent. Each partition is
        read by one consumer at a time, so more workers than this cannot help (skew)."""
        return sum(1 for p in self.partitions if p.lag > 0)

    def describe(self) -> str:
        """``37 (turbo 30, fast 7, relax 0)`` for reasons and messages."""
        parts = ", ".join(f"{t.tier} {t.lag}" for t in self.tiers)
        return f"{self.total} ({parts})" if parts else str(self.total)


def partition_lag(end: int, committed: int | None, begin: int = 0) -> int:
    """Lag of one partition; see the module docstring for the edge cases."""
    start = begin if committed is None or committed < 0 else max(committed, begin)
    return max(0, end - start)


def compute_lag(
    tier_topics: Mapping[str, str],
    end_offsets: Mapping[TopicPartition, int],
    committed: Mapping[TopicPartition, int | None],
    begin_offsets: Mapping[TopicPartition, int],
    read_ms: float = 0.0,
) -> LagSnapshot:
    """Lag per tier (tier -> topic) from end, committed and beginning offsets.

    The partitions of a topic are those present in ``end_offsets``. A partition missing from
    ``committed`` (or committed as None / -1, Kafka's "no offset") has no commit; one missing from
    ``begin_offsets`` starts at 0.
    """
    tiers: list[TierLag] = []
    parts: list[PartitionLag] = []
    missing = 0
    by_topic: dict[str, list[int]] = {}
    for topic, partition in end_offsets:
        by_topic.setdefault(topic, []).append(partition)
    for tier, topic in tier_topics.items():
        lags: list[int] = []
        for p in sorted(by_topic.get(topic, ())):
            tp = (topic, p)
            end = end_offsets[tp]
            c = committed.get(tp)
            if c is not None and c < 0:
                c = None
            if c is None:
                missing += 1
            lag = partition_lag(end, c, begin_offsets.get(tp, 0))
            parts.append(PartitionLag(topic, p, end, c, lag, tier))
            lags.append(lag)
        tiers.append(TierLag(tier, sum(lags), len(lags), max(lags, default=0)))
    return LagSnapshot(
        tiers=tuple(tiers),
        total=sum(t.lag for t in tiers),
        partitions_total=sum(t.partitions for t in tiers),
        busiest_tier_partitions=_busiest_partitions(tiers),
        read_ms=read_ms,
        missing_commits=missing,
        partitions=tuple(parts),
    )


def _busiest_partitions(tiers: Iterable[TierLag]) -> int:
    # Busiest = most lag, ties broken by more partitions; with no lag at all, the widest tier
    # (the cap then only matters for warm.minReplicas, which the policy never caps).
    best = max(tiers, key=lambda t: (t.lag, t.partitions), default=None)
    return best.partitions if best is not None else 0


# A backlog whose committed offset has not moved for this long while workers are ready is
# reported: a hung worker or a batch far slower than expected (poison messages go to the
# dead-letter topic after maxAttempts, so they do not stall a partition forever).
STALL_SECONDS = 120.0


def track_stalls(
    since: Mapping[TopicPartition, tuple[int | None, float]],
    current: LagSnapshot,
    now: float,
) -> dict[TopicPartition, tuple[int | None, float]]:
    """(committed offset, first seen at) of every partition with a backlog, carried over while
    the committed offset stays the same; a partition that moved or drained starts again."""
    out: dict[TopicPartition, tuple[int | None, float]] = {}
    for p in current.partitions:
        if p.lag <= 0:
            continue
        key = (p.topic, p.partition)
        before = since.get(key)
        out[key] = before if before is not None and before[0] == p.committed else (
            p.committed, now)
    return out


@dataclass(frozen=True)
class Stall:
    topic: str
    partition: int
    lag: int
    seconds: float  # since the committed offset last moved

    @property
    def where(self) -> str:
        return f"{self.topic}:{self.partition}"

    def __str__(self) -> str:
        return f"{self.where} (lag {self.lag}, no progress for {self.seconds:.0f}s)"


def stalled_for(
    since: Mapping[TopicPartition, tuple[int | None, float]], current: LagSnapshot, now: float,
    threshold: float = STALL_SECONDS, per_topic: Mapping[str, float] | None = None,
) -> list[Stall]:
    """Partitions stuck at least their threshold, the longest first.

    `per_topic` raises the threshold of a topic: a low tier legitimately waits while higher
    tiers are served, up to its maxWaitSeconds (the workers' starvation guard).
    """
    lag = {(p.topic, p.partition): p.lag for p in current.partitions}
    limits = per_topic or {}
    stuck = [Stall(topic, part, lag.get((topic, part), 0), now - at)
             for (topic, part), (_, at) in since.items()
             if now - at >= max(threshold, limits.get(topic, 0.0))]
    return sorted(stuck, key=lambda s: s.seconds, reverse=True)
