"""Tier scheduler: weights over a long run, starvation guard, compatible batching, backpressure.

Deterministic: a manual clock; nothing sleeps.
"""

from __future__ import annotations

from collections import Counter
from itertools import count
from typing import Any

import pytest
from imagegen_api.specs import DEFAULT_TIER_SPECS, Tier
from imagegen_worker.scheduler import TierScheduler

TIERS = list(DEFAULT_TIER_SPECS)  # turbo 10 / 10 s, fast 5 / 60 s, relax 1 / 300 s


def make(clock: Any, *, batch: int = 1, wait_ms: int = 0, tiers: list[Tier] = TIERS,
         **kw: Any) -> TierScheduler[str]:
    return TierScheduler(tiers, max_batch_size=batch, max_wait_ms=wait_ms, clock=clock, **kw)


class TestWeights:
    def test_leaders_follow_10_5_1_over_a_long_run(self, clock: Any) -> None:
        s = make(clock)
        ids = count()
        for tier in ("turbo", "fast", "relax"):
            for _ in range(4):
                s.push(f"{tier}-{next(ids)}", tier=tier, key=next(ids))
        picks: Counter[str] = Counter()
        for _ in range(1600):
            b = s.next_batch()
            assert b is not None and not b.promoted
            picks[b.tier] += 1
            s.push(f"{b.tier}-{next(ids)}", tier=b.tier, key=next(ids))  # keep every tier busy
            clock.advance(0.001)
        assert picks == {"turbo": 1000, "fast": 500, "relax": 100}

    def test_tiers_are_interleaved_not_served_in_runs(self, clock: Any) -> None:
        s = make(clock)
        for i in range(20):
            for tier in ("turbo", "fast", "relax"):
                s.push(f"{tier}{i}", tier=tier, key=(tier, i))
        order = []
        for _ in range(16):
            b = s.next_batch()
            assert b is not None
            order.append(b.tier)
        assert Counter(order) == {"turbo": 10, "fast": 5, "relax": 1}
        longest_turbo_run = max(len(run) for run in "".join(t[0] for t in order).split("f"))
        assert longest_turbo_run <= 4

    def test_weights_hold_within_tolerance_with_batches_and_mixed_sizes(self, clock: Any) -> None:
        s = make(clock, batch=4, wait_ms=50)
        served: Counter[str] = Counter()
        for i in range(200):  # more than 32 batches' worth in every tier
            for tier in ("turbo", "fast", "relax"):
                s.push(f"{tier}{i}", tier=tier, key="same", size=1 + i % 2)
        while len(s):
            b = s.next_batch(flush=True)
            assert b is not None
            assert b.images <= 4
            served[b.tier] += 1
            if sum(served.values()) == 32:
                break
        share = {t: n / 32 for t, n in served.items()}
        assert share["turbo"] == pytest.approx(10 / 16, abs=0.07)
        assert share["fast"] == pytest.approx(5 / 16, abs=0.07)
        assert share["relax"] == pytest.approx(1 / 16, abs=0.07)

    def test_idle_tiers_do_not_hold_back_busy_ones(self, clock: Any) -> None:
        s = make(clock)
        for i in range(5):
            s.push(f"r{i}", tier="relax", key=i)
        assert [s.next_batch().tier for _ in range(5)] == ["relax"] * 5  # type: ignore[union-attr]
        assert s.next_batch() is None


class TestStarvationGuard:
    def test_request_past_max_wait_is_promoted(self, clock: Any) -> None:
        s = make(clock)
        s.push("old-relax", tier="relax", key=1)
        clock.advance(301)
        for i in range(10):
            s.push(f"t{i}", tier="turbo", key=i + 10)
        b = s.next_batch()
        assert b is not None and b.promoted and b.items == ["old-relax"]
        b = s.next_batch()
        assert b is not None and b.tier == "turbo" and not b.promoted

    def test_not_promoted_before_max_wait(self, clock: Any) -> None:
        s = make(clock)
        s.push("relax", tier="relax", key=1)
        clock.advance(299)
        for i in range(3):
            s.push(f"t{i}", tier="turbo", key=i + 10)
        assert s.next_batch().tier == "turbo"  # type: ignore[union-attr]

    def test_most_overdue_goes_first(self, clock: Any) -> None:
        s = make(clock)
        s.push("fast", tier="fast", key=1)  # max wait 60
        clock.advance(250)
        s.push("turbo", tier="turbo", key=2)  # max wait 10
        clock.advance(65)  # fast overdue by 255, turbo by 55
        assert s.next_batch().items == ["fast"]  # type: ignore[union-attr]
        assert s.next_batch().items == ["turbo"]  # type: ignore[union-attr]


class TestBatching:
    def test_only_compatible_requests_share_a_batch(self, clock: Any) -> None:
        s = make(clock, batch=4, wait_ms=50)
        s.push("a1", tier="fast", key="A")
        s.push("b1", tier="fast", key="B")
        s.push("a2", tier="fast", key="A")
        s.push("a3", tier="relax", key="A")
        s.push("b2", tier="turbo", key="B")
        clock.advance(0.05)
        first = s.next_batch()
        assert first is not None
        assert first.tier == "turbo" and first.items == ["b2", "b1"]
        second = s.next_batch()
        assert second is not None and second.items == ["a1", "a2", "a3"]
        assert s.next_batch() is None and len(s) == 0

    def test_batches_fill_up_to_max_images(self, clock: Any) -> None:
        s = make(clock, batch=4)
        s.push("big", tier="fast", key="A", size=3)
        s.push("two", tier="fast", key="A", size=2)
        s.push("one", tier="fast", key="A", size=1)
        b = s.next_batch()
        assert b is not None and b.items == ["big", "one"] and b.images == 4
        assert s.next_batch().items == ["two"]  # type: ignore[union-attr]

    def test_oversized_request_runs_alone(self, clock: Any) -> None:
        s = make(clock, batch=2)
        s.push("huge", tier="fast", key="A", size=4)
        s.push("one", tier="fast", key="A")
        assert s.next_batch().items == ["huge"]  # type: ignore[union-attr]

    def test_partial_batch_waits_max_wait_ms(self, clock: Any) -> None:
        s = make(clock, batch=4, wait_ms=50)
        s.push("a", tier="fast", key="A")
        assert s.next_batch() is None
        assert s.wake_at() == pytest.approx(clock() + 0.05)
        clock.advance(0.049)
        assert s.next_batch() is None
        clock.advance(0.001)
        assert s.next_batch().items == ["a"]  # type: ignore[union-attr]

    def test_full_batch_is_ready_at_once_and_flush_sends_partial(self, clock: Any) -> None:
        s = make(clock, batch=2, wait_ms=1000)
        s.push("a", tier="fast", key="A")
        s.push("b", tier="fast", key="B")
        assert s.next_batch() is None
        assert s.next_batch(flush=True).items == ["a"]  # type: ignore[union-attr]
        s.push("b2", tier="fast", key="B")
        assert s.next_batch().items == ["b", "b2"]  # type: ignore[union-attr]
        assert s.wake_at() is None

    def test_requeued_entry_runs_alone_first_keeping_its_age(self, clock: Any) -> None:
        s = make(clock, batch=4)
        first = s.push("x", tier="fast", key="A")
        s.push("y", tier="fast", key="A")
        b = s.next_batch()
        assert b is not None and b.items == ["x", "y"]
        s.push("z", tier="fast", key="A")
        s.requeue(first)
        again = s.next_batch()
        assert again is not None and again.items == ["x"]
        assert again.entries[0].enqueued_at == first.enqueued_at
        assert s.next_batch(flush=True).items == ["z"]  # type: ignore[union-attr]


class TestBackpressure:
    def test_tier_pauses_above_two_batches_and_resumes_at_one(self, clock: Any) -> None:
        s = make(clock, batch=4)
        for i in range(8):
            s.push(f"f{i}", tier="fast", key=i)
        assert s.paused_tiers() == frozenset()  # exactly two batches: still fetching
        s.push("f8", tier="fast", key=8)
        s.push("t0", tier="turbo", key=100)
        assert s.paused_tiers() == {"fast"}
        s.drop(lambda e: e.item in {"f0", "f1", "f2", "f3"})  # 9 → 5: still above one batch
        assert s.depths()["fast"] == 5
        assert s.paused_tiers() == {"fast"}
        s.drop(lambda e: e.item == "f4")
        assert s.depths()["fast"] == 4
        assert s.paused_tiers() == frozenset()

    def test_thresholds_count_images(self, clock: Any) -> None:
        s = make(clock, batch=2)
        s.push("a", tier="relax", key=1, size=2)
        s.push("b", tier="relax", key=2, size=2)
        assert s.paused_tiers() == frozenset()
        s.push("c", tier="relax", key=3, size=1)
        assert s.paused_tiers() == {"relax"}

    def test_drop_by_partition_for_revocation(self, clock: Any) -> None:
        s = make(clock)
        s.push("p0", tier="fast", key=1, partition=("t.fast", 0))
        s.push("p1", tier="fast", key=2, partition=("t.fast", 1))
        dropped = s.drop(lambda e: e.partition in {("t.fast", 0)})
        assert [e.item for e in dropped] == ["p0"]
        assert [e.item for e in s.entries()] == ["p1"]
