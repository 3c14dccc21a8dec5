"""Heartbeat payload and the counters behind it (sliding-window throughput, batch median)."""

from __future__ import annotations

import asyncio
from typing import Any

from imagegen_api.messages import Heartbeat
from imagegen_worker import heartbeat
from imagegen_worker.stats import WorkerStats


def test_payload_carries_state_counters_and_freshness(clock: Any) -> None:
    stats = WorkerStats(window_seconds=60, clock=clock)
    clock.advance(30)
    stats.in_flight = 3
    stats.answered()
    stats.answered(failed=True)
    stats.images_done(12)
    for s in (0.5, 0.7, 2.0):
        stats.batch_done(s)
    hb = heartbeat.build(
        worker="tiny-warm-0", role="warm", state="ready", ready=True, models=["tiny"],
        model_revision="rev", snapshot=stats.snapshot(), interval_seconds=5, now=1000.0,
        started_at=900.0,
    )
    assert hb == Heartbeat(
        worker="tiny-warm-0", role="warm", state="ready", ready=True, models=["tiny"],
        model_revision="rev", in_flight=3, processed=2, failed=1, images_per_second=0.4, images=12,
        batch_seconds_p50=0.7, interval_seconds=5, updated_at=1000.0, started_at=900.0,
    )
    assert Heartbeat.from_bytes(hb.to_bytes()) == hb
    assert hb.is_fresh(1015) and not hb.is_fresh(1016)


def test_throughput_is_a_sliding_window(clock: Any) -> None:
    stats = WorkerStats(window_seconds=10, clock=clock)
    clock.advance(100)
    stats.images_done(20)
    assert stats.images_per_second() == 2.0
    clock.advance(5)
    stats.images_done(10)
    assert stats.images_per_second() == 3.0
    clock.advance(6)  # the first 20 images left the window
    assert stats.images_per_second() == 1.0
    clock.advance(20)
    assert stats.images_per_second() == 0.0


def test_no_batches_no_median(clock: Any) -> None:
    snap = WorkerStats(clock=clock).snapshot()
    assert snap.batch_seconds_p50 is None and snap.processed == 0


def test_hash_ttl_is_generous() -> None:
    assert heartbeat.key_ttl_seconds(5) == 300
    assert heartbeat.key_ttl_seconds(60) == 1200


def test_cache_counts_come_from_the_workers_own_counters() -> None:
    from imagegen_worker.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    assert heartbeat.cache_counts(metrics) == (0, 0)
    metrics.cache_hits.inc(3)
    metrics.cache_misses.inc()
    hits, misses = heartbeat.cache_counts(metrics)
    hb = heartbeat.build(
        worker="w", role="warm", state="ready", ready=True, models=["tiny"], model_revision=None,
        snapshot=WorkerStats().snapshot(), interval_seconds=5, now=1.0, started_at=0.0,
        cache_hits=hits, cache_misses=misses)
    assert (hb.cache_hits, hb.cache_misses, hb.images) == (3, 1, 0)


class _SwallowingRedis:
    """What redis-py can do with a cancel that arrives mid-connect: raise a connection error
    instead of CancelledError (the heartbeat writes through a pipeline)."""

    def pipeline(self, transaction: bool = False) -> _SwallowingRedis:
        return self

    async def __aenter__(self) -> _SwallowingRedis:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def hset(self, *args: Any) -> None:
        return None

    def expire(self, *args: Any) -> None:
        return None

    async def execute(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed while connecting") from None

    async def ping(self) -> bool:
        return True


async def test_a_cancel_swallowed_by_the_redis_call_still_ends_the_loop() -> None:
    from imagegen_worker.metrics import WorkerMetrics

    def payload() -> Heartbeat:
        return heartbeat.build(worker="w", role="warm", state="loading", ready=False,
                               models=["m"], model_revision=None,
                               snapshot=WorkerStats().snapshot(), interval_seconds=1,
                               now=0.0, started_at=0.0)

    client: Any = _SwallowingRedis()
    beats = heartbeat.Heartbeater(client, "k", "w", 0.05, payload, WorkerMetrics())
    task = asyncio.create_task(beats.run())
    await asyncio.sleep(0.05)  # inside the first write
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()  # ended as cancelled, not beating on
