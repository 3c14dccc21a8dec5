"""The pool's load as the gateway sees it, refreshed in the background every few seconds:
backlog = Σ over the tier topics' partitions of (end offset - the workers' group committed
offset, or the log start where the group never committed), throughput = Σ images_per_second of
the fresh heartbeats in Redis (naming.workers_key). shedding.decide turns it into admit/refuse.

A failed read keeps the last figures for up to 3 refresh periods, then gives None (no estimate:
admit), so a Kafka hiccup never turns the gateway into a wall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from imagegen_api import naming
from imagegen_api.messages import Heartbeat
from imagegen_api.workerconfig import WorkerConfig
from pydantic import ValidationError

from .shedding import Load

log = logging.getLogger(__name__)


async def throughput(redis: aioredis.Redis, pool: WorkerConfig, now: float) -> float:
    raw = cast(dict[bytes, bytes], await redis.hgetall(naming.workers_key(pool.namespace,
                                                                         pool.pool)))
    total = 0.0
    for value in raw.values():
        try:
            hb = Heartbeat.from_bytes(value)
        except ValidationError:
            continue
        if hb.is_fresh(now) and hb.state in ("ready", "draining"):
            total += hb.images_per_second
    return total


class BacklogMonitor:
    def __init__(self, bootstrap: str, pool: WorkerConfig, redis: aioredis.Redis, *,
                 client_id: str, refresh_seconds: float) -> None:
        self._bootstrap = bootstrap
        self._pool = pool
        self._redis = redis
        self._client_id = client_id
        self._refresh = refresh_seconds
        self._admin: Any = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._load: Load | None = None
        self._at = 0.0

    @property
    def load(self) -> Load | None:
        if self._load is None or time.monotonic() - self._at > 3 * self._refresh:
            return None
        return self._load

    async def start(self, partitions: dict[str, set[int]]) -> None:
        """`partitions`: tier topic → its partitions (from the producer's metadata)."""
        self._tps = [TopicPartition(t, p) for t, ps in partitions.items() for p in sorted(ps)]
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap,
                                          client_id=self._client_id)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap,
                                          client_id=self._client_id, group_id=None,
                                          enable_auto_commit=False)
        await self._admin.start()
        await self._consumer.start()
        with contextlib.suppress(KafkaError, OSError, aioredis.RedisError, TimeoutError):
            await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="backlog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    async def refresh(self) -> Load:
        assert self._consumer is not None
        group = naming.consumer_group(self._pool.namespace, self._pool.pool)
        async with asyncio.timeout(10):
            ends, begins, committed = await asyncio.gather(
                self._consumer.end_offsets(self._tps),
                self._consumer.beginning_offsets(self._tps),
                self._admin.list_consumer_group_offsets(group, partitions=self._tps))
            rate = await throughput(self._redis, self._pool, time.time())
        backlog = 0
        for tp in self._tps:
            om = committed.get(tp)
            done = om.offset if om is not None and om.offset >= 0 else begins[tp]
            backlog += max(0, int(ends[tp]) - int(done))
        self._load = Load(backlog=backlog, throughput=rate)
        self._at = time.monotonic()
        return self._load

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.refresh()
            except (KafkaError, OSError, aioredis.RedisError, TimeoutError) as exc:
                log.warning("backlog not read: %s", exc)
