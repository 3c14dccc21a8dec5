"""Result cache in Redis: imagegen:cache:<sha256 of the parameters> → the stored object
(key, sha256, size, seed, width, height, format), with a TTL.

`intake` looks every seeded request up before queueing it (a full hit is answered with fresh
presigned URLs and no GPU work); the batch runner stores new images after upload. The cache is an
optimisation, never a dependency: when Redis fails, lookups report "unavailable", the error is
counted and logged once, and the cache is not tried again for `retry_after` seconds (so requests
do not each pay a timeout); the next try reconnects through the client's pool.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis
from imagegen_api import naming

from .logs import fields
from .metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedImage:
    key: str  # S3 object key
    sha256: str  # of the stored bytes
    size: int
    seed: int
    width: int
    height: int
    format: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> CachedImage:
        return cls(**json.loads(raw))


class ImageCache:
    def __init__(
        self,
        client: aioredis.Redis | None,
        *,
        ttl_seconds: int,
        metrics: WorkerMetrics,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client  # None: caching disabled for this pool
        self.ttl = ttl_seconds
        self.metrics = metrics
        self.retry_after = retry_after
        self.clock = clock
        self._down_until = 0.0

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def available(self) -> bool:
        return self.client is not None and self.clock() >= self._down_until

    async def get_many(self, digests: Sequence[str]) -> list[CachedImage | None] | None:
        """Entries for `digests` (None where missing); None when the cache cannot be asked."""
        if not digests or self.client is None or not self.available():
            return None
        try:
            raw = await self.client.mget([naming.cache_key(d) for d in digests])
        except Exception as exc:
            self._failed("get", exc)
            return None
        self._recovered()
        out: list[CachedImage | None] = []
        for value in raw:
            try:
                out.append(CachedImage.from_json(value) if value else None)
            except (ValueError, TypeError):
                out.append(None)  # unreadable entry: regenerate and overwrite
        return out

    async def put_many(self, items: Sequence[tuple[str, CachedImage]]) -> bool:
        if not items or self.client is None or not self.available():
            return False
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for digest, entry in items:
                    pipe.set(naming.cache_key(digest), entry.to_json(), ex=self.ttl)
                await pipe.execute()
        except Exception as exc:
            self._failed("put", exc)
            return False
        self._recovered()
        return True

    def _failed(self, op: str, exc: Exception) -> None:
        self.metrics.cache_errors.inc()
        if self._down_until == 0.0:
            log.warning("cache unavailable, generating without it",
                        extra=fields(op=op, error=repr(exc), retry_after_s=self.retry_after))
        self._down_until = self.clock() + self.retry_after

    def _recovered(self) -> None:
        if self._down_until:
            log.info("cache available again")
        self._down_until = 0.0
