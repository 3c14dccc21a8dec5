"""Reads the workers' heartbeats (Redis hash imagegen:workers:<ns>/<pool>) for the pool status.

Observed by every pool pass (pool_observe.py). Heartbeats only feed throughput, busy workers and
the scale-down ranking, so a slow or blackholed Redis must cost a pass little: one short attempt
(no client retries), a total bound per read, and after a failure no attempt at all for
BREAKER_SECONDS (the pass goes on without heartbeats).
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from imagegen_api import naming
from imagegen_api.messages import Heartbeat
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 1.0
# Bound of one read (HGETALL, then HDEL of stale fields), whatever the socket does.
READ_TIMEOUT_S = 2.0
BREAKER_SECONDS = 15.0


class HeartbeatsUnavailable(RuntimeError):
    """Redis did not answer in time, failed, or the breaker is open; the message says which."""


class HeartbeatReader:
    def __init__(self, url: str, *, breaker_seconds: float = BREAKER_SECONDS) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False)
        self._breaker_seconds = breaker_seconds
        self._open_until = 0.0

    async def close(self) -> None:
        await self._redis.aclose()

    async def read(self, namespace: str, pool: str, now: float) -> list[Heartbeat]:
        """Fresh heartbeats; stale fields (a worker gone for 3 intervals) are deleted."""
        if time.monotonic() < self._open_until:
            raise HeartbeatsUnavailable("skipped: Redis failed recently")
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                return await self._read(namespace, pool, now)
        except (TimeoutError, aioredis.RedisError, OSError) as err:
            self._open_until = time.monotonic() + self._breaker_seconds
            # The error text may carry the URL (and its password): name the class only.
            raise HeartbeatsUnavailable(
                f"{type(err).__name__}; not retried for {self._breaker_seconds:g} s") from err

    async def _read(self, namespace: str, pool: str, now: float) -> list[Heartbeat]:
        key = naming.workers_key(namespace, pool)
        raw = await self._redis.hgetall(key)
        fresh: list[Heartbeat] = []
        stale: list[bytes | str] = []
        for field, value in raw.items():
            try:
                hb = Heartbeat.model_validate_json(value)
            except ValidationError:
                stale.append(field)
                continue
            if hb.is_fresh(now):
                fresh.append(hb)
            else:
                stale.append(field)
        if stale:
            await self._redis.hdel(key, *stale)
        return fresh
