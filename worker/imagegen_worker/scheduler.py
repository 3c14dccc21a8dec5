"""Tier scheduler: which fetched requests the GPU runs next, and in which batches.

Pure (no Kafka, Redis or torch; time comes from an injected clock). `app` pushes validated
requests that missed the cache and asks for the next batch whenever the GPU is free.

- One FIFO queue per tier. The next batch is led by the head of a tier chosen by smooth weighted
  round-robin (nginx's algorithm: over a long run each tier leads weight/Σweights of the batches,
  evenly interleaved), among the tiers whose batch is ready.
- Starvation guard: a head that waited longer than its tier's maxWaitSeconds leads the next batch
  whatever the weights say (the most overdue first).
- A batch holds requests compatible with its leader (same compatibility key: model and the
  pipeline's batch_key), from the leader's tier first then the other tiers by weight, up to
  maxBatchSize images. It is ready when full, when its leader waited maxWaitMs, or on flush.
- Backpressure: a tier holding more than two batches of images asks the consumer to pause its
  partitions until it is down to one, so unstarted messages stay in Kafka, where the lag shows
  them to the autoscaler and a rebalance hands them to other workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from imagegen_api.specs import Tier

T = TypeVar("T")
EPS = 1e-9  # clock comparisons: a wait of exactly the limit counts as reached


@dataclass(eq=False)
class Entry(Generic[T]):
    """One queued request and what the scheduler needs to know about it."""

    item: T
    tier: str
    key: Hashable  # compatibility key: only equal keys share a batch
    size: int  # images it asks for
    enqueued_at: float  # scheduler clock
    partition: Hashable | None = None  # where it came from, to drop it on revocation
    solo: bool = False  # run alone (a retry after a failed batch)


@dataclass(frozen=True)
class Batch(Generic[T]):
    tier: str  # tier of the leader
    entries: list[Entry[T]]
    promoted: bool  # led by a request past its tier's max wait

    @property
    def items(self) -> list[T]:
        return [e.item for e in self.entries]

    @property
    def images(self) -> int:
        return sum(e.size for e in self.entries)


@dataclass
class _TierState(Generic[T]):
    spec: Tier
    queue: list[Entry[T]] = field(default_factory=list)
    current: int = 0  # smooth WRR running weight
    paused: bool = False

    @property
    def depth(self) -> int:
        return sum(e.size for e in self.queue)


class TierScheduler(Generic[T]):
    def __init__(
        self,
        tiers: Sequence[Tier],
        *,
        max_batch_size: int,
        max_wait_ms: int,
        clock: Callable[[], float] = time.monotonic,
        high_water: int | None = None,
        low_water: int | None = None,
    ) -> None:
        if not tiers:
            raise ValueError("at least one tier is required")
        self._tiers: dict[str, _TierState[T]] = {t.name: _TierState(t) for t in tiers}
        # Tiers by weight, heaviest first (declaration order breaks ties): the fill order.
        self._by_weight = sorted(self._tiers, key=lambda n: -self._tiers[n].spec.weight)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.clock = clock
        self.high_water = 2 * max_batch_size if high_water is None else high_water
        self.low_water = max_batch_size if low_water is None else low_water

    # --- queue -------------------------------------------------------------------------------

    def push(
        self,
        item: T,
        *,
        tier: str,
        key: Hashable,
        size: int = 1,
        partition: Hashable | None = None,
        enqueued_at: float | None = None,
        solo: bool = False,
    ) -> Entry[T]:
        """Queue one request at the back of its tier (`solo`: it will run in a batch alone)."""
        entry = Entry(item, tier, key, max(1, size),
                      self.clock() if enqueued_at is None else enqueued_at, partition)
        entry.solo = solo
        self._tiers[tier].queue.append(entry)
        return entry

    def requeue(self, entry: Entry[T], *, solo: bool = True) -> None:
        """Put a started entry back at the front of its tier, keeping its age (retries)."""
        entry.solo = solo
        self._tiers[entry.tier].queue.insert(0, entry)

    def drop(self, predicate: Callable[[Entry[T]], bool]) -> list[Entry[T]]:
        """Remove and return every queued entry matching `predicate` (revoked partitions)."""
        dropped: list[Entry[T]] = []
        for state in self._tiers.values():
            keep: list[Entry[T]] = []
            for e in state.queue:
                (dropped if predicate(e) else keep).append(e)
            state.queue = keep
        return dropped

    def drain_all(self) -> list[Entry[T]]:
        return self.drop(lambda _e: True)

    def __len__(self) -> int:
        return sum(len(s.queue) for s in self._tiers.values())

    def depths(self) -> dict[str, int]:
        """Queued images per tier."""
        return {name: s.depth for name, s in self._tiers.items()}

    def entries(self) -> Iterable[Entry[T]]:
        for s in self._tiers.values():
            yield from s.queue

    # --- picking -----------------------------------------------------------------------------

    def next_batch(self, *, flush: bool = False) -> Batch[T] | None:
        """The batch to run now, or None when nothing is ready yet (see `wake_at`).

        `flush` makes partial batches ready at once (draining, or nothing else to wait for).
        """
        now = self.clock()
        active = [s for s in self._tiers.values() if s.queue]
        if not active:
            return None

        overdue = [s for s in active
                   if now - s.queue[0].enqueued_at + EPS >= s.spec.max_wait_seconds]
        if overdue:
            chosen = max(
                overdue,
                key=lambda s: (now - s.queue[0].enqueued_at - s.spec.max_wait_seconds,
                               s.spec.weight),
            )
            return Batch(chosen.spec.name, self._take(chosen), promoted=True)

        ready = [s for s in active if flush or self._ready(s, now)]
        if not ready:
            return None
        total = sum(s.spec.weight for s in ready)
        for s in ready:
            s.current += s.spec.weight
        chosen = max(ready, key=lambda s: s.current)  # first max: declaration order on ties
        chosen.current -= total
        return Batch(chosen.spec.name, self._take(chosen), promoted=False)

    def wake_at(self) -> float | None:
        """Clock time at which a partial batch becomes ready (None when nothing is queued)."""
        heads = [s.queue[0].enqueued_at for s in self._tiers.values() if s.queue]
        return min(heads) + self.max_wait if heads else None

    def _ready(self, state: _TierState[T], now: float) -> bool:
        leader = state.queue[0]
        if leader.solo or now - leader.enqueued_at + EPS >= self.max_wait:
            return True
        return self._fill_size(leader) >= self.max_batch_size

    def _candidates(self, leader: Entry[T]) -> Iterable[tuple[_TierState[T], Entry[T]]]:
        order = [leader.tier] + [n for n in self._by_weight if n != leader.tier]
        for name in order:
            state = self._tiers[name]
            for e in state.queue:
                if e is not leader and not e.solo and e.key == leader.key:
                    yield state, e

    def _fill_size(self, leader: Entry[T]) -> int:
        size = leader.size
        for _state, e in self._candidates(leader):
            if size + e.size <= self.max_batch_size:
                size += e.size
            if size >= self.max_batch_size:
                break
        return size

    def _take(self, state: _TierState[T]) -> list[Entry[T]]:
        leader = state.queue.pop(0)
        batch = [leader]
        if leader.solo:
            return batch
        size = leader.size
        taken: list[tuple[_TierState[T], Entry[T]]] = []
        for st, e in self._candidates(leader):
            if size >= self.max_batch_size:
                break
            if size + e.size <= self.max_batch_size:
                taken.append((st, e))
                size += e.size
        for st, e in taken:
            st.queue.remove(e)
            batch.append(e)
        return batch

    # --- backpressure ------------------------------------------------------------------------

    def paused_tiers(self) -> frozenset[str]:
        """Tiers whose partitions the consumer should not fetch now (with hysteresis)."""
        for s in self._tiers.values():
            depth = s.depth
            if not s.paused and depth > self.high_water:
                s.paused = True
            elif s.paused and depth <= self.low_water:
                s.paused = False
        return frozenset(n for n, s in self._tiers.items() if s.paused)
