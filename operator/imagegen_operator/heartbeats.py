"""Reads the workers' heartbeats (Redis hash imagegen:workers:<ns>/<pool>) for the pool status."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from imagegen_api import naming
from imagegen_api.messages import Heartbeat
from pydantic import ValidationError

log = logging.getLogger(__name__)


class HeartbeatReader:
    def __init__(self, url: str) -> None:
        self.url = url
        self._redis = aioredis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)

    async def close(self) -> None:
        await self._redis.aclose()

    async def read(self, namespace: str, pool: str, now: float) -> list[Heartbeat]:
        """Fresh heartbeats; stale fields (a worker gone for 3 intervals) are deleted."""
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
