"""Heartbeats: every heartbeat_seconds this worker writes its state into the pool's Redis hash
(naming.workers_key, field = pod name, value = messages.Heartbeat JSON) for the operator to
aggregate into the GenerationPool status. The field is removed on a clean exit; the hash expires
on its own if every worker of the pool vanishes. Redis errors are logged and counted, never
fatal: the operator treats a stale field (3 intervals) as a gone worker. Writes go through a
breaker (`breaker.Breaker`): with Redis frozen, beats fail at once instead of each waiting out
the client's timeout.

`build` is pure (tested without Redis); `Heartbeater` runs the loop, started by `app`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from imagegen_api.messages import Heartbeat, WorkerState

from .aio import wait_event
from .breaker import Breaker
from .logs import fields
from .metrics import WorkerMetrics
from .stats import Snapshot

log = logging.getLogger(__name__)


def build(
    *,
    worker: str,
    role: str | None,
    state: WorkerState,
    ready: bool,
    models: list[str],
    model_revision: str | None,
    snapshot: Snapshot,
    interval_seconds: float,
    now: float,
    started_at: float,
    cache_hits: int = 0,
    cache_misses: int = 0,
    loras: list[str] | None = None,
    blocked_images: int = 0,
) -> Heartbeat:
    """The heartbeat value for this moment; `cache_hits`/`cache_misses` from `cache_counts`."""
    return Heartbeat(
        worker=worker,
        role=role,
        state=state,
        ready=ready,
        models=models,
        model_revision=model_revision,
        loras=loras or [],
        in_flight=snapshot.in_flight,
        processed=snapshot.processed,
        failed=snapshot.failed,
        images_per_second=snapshot.images_per_second,
        images=snapshot.images,
        cache_hits=cache_hits,
        cache_misses=cache_misses,
        blocked_images=blocked_images,
        batch_seconds_p50=snapshot.batch_seconds_p50,
        interval_seconds=interval_seconds,
        updated_at=now,
        started_at=started_at,
    )


def cache_counts(metrics: WorkerMetrics) -> tuple[int, int]:
    """(hits, misses) of the image cache since start, read from the worker's own counters
    (the cache and intake count there; one source of truth for /metrics and the heartbeat)."""
    def total(name: str) -> int:
        return int(metrics.registry.get_sample_value(f"{name}_total") or 0)

    return total("imagegen_cache_hits"), total("imagegen_cache_misses")


def key_ttl_seconds(interval_seconds: float) -> int:
    """TTL of the whole hash, refreshed by every beat of every worker: generous on purpose."""
    return int(max(300, 20 * interval_seconds))


class Heartbeater:
    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        worker: str,
        interval_seconds: float,
        payload: Callable[[], Heartbeat],
        metrics: WorkerMetrics,
        breaker: Breaker | None = None,
    ) -> None:
        self.client = client
        self.breaker = breaker or Breaker("heartbeats", probe=client.ping)
        self.key = key
        self.worker = worker
        self.interval = interval_seconds
        self.payload = payload
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._failing = False

    def poke(self) -> None:
        """Beat now (state changed) instead of at the next interval."""
        self._wake.set()

    async def beat_once(self) -> bool:
        try:
            value = self.payload().model_dump_json(exclude_none=True)
            await self.breaker.call(lambda: self._write(value))
        except Exception as exc:  # Redis down: keep working, say so once
            self.metrics.redis_errors.labels("heartbeat").inc()
            if not self._failing:
                log.warning("heartbeat write failed", extra=fields(error=repr(exc)))
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeat writes recovered")
        self._failing = False
        return True

    async def _write(self, value: str) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, self.worker, value)
            pipe.expire(self.key, key_ttl_seconds(self.interval))
            await pipe.execute()

    async def run(self) -> None:
        """Beat every interval until cancelled. A cancel that arrives while redis-py connects
        can come out of it as a connection error (caught by `beat_once`): the loop then sees
        the task is being cancelled and ends, instead of beating on and holding the exit."""
        me = asyncio.current_task()
        while True:
            await self.beat_once()
            if me is not None and me.cancelling():
                raise asyncio.CancelledError  # end as the cancelled task it is
            self._wake.clear()
            await wait_event(self._wake, self.interval)

    async def remove(self) -> None:
        try:
            await self.client.hdel(self.key, self.worker)
        except Exception as exc:
            log.warning("could not remove heartbeat", extra=fields(error=repr(exc)))
