"""Result cache in Redis: imagegen:cache:<ns>/<pool>/<sha256 of the parameters> → the stored
object (key, sha256, size, seed, width, height, format, and the bucket and endpoint it lives in),
with a TTL.

`intake` looks every seeded request up before queueing it (a full hit is answered with fresh
presigned URLs and no GPU work); the batch runner stores new images after upload. The cache is an
optimisation, never a dependency: when Redis fails, lookups report "unavailable", the error is
counted and logged once, and the cache is not tried again for `retry_after` seconds (so requests
do not each pay a timeout); the next try reconnects through the client's pool.

Entries are per pool and read strictly (pydantic, unknown fields refused): an entry that does not
parse, names an object outside this pool's prefix, or lives in another bucket or behind another
endpoint (the pool's storage settings changed, or someone wrote it by hand) is a miss — the image
is generated again and the entry overwritten — never an answer with a URL that cannot work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from imagegen_api import naming
from imagegen_api.specs import OutputFormat
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .logs import fields
from .metrics import WorkerMetrics

log = logging.getLogger(__name__)


class CachedImage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    key: str = Field(min_length=1, max_length=1024)  # S3 object key
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # of the stored bytes
    size: int = Field(ge=0)
    seed: int = Field(ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    format: OutputFormat
    # Where the object lives; stamped by ImageCache.put_many, compared by get_many.
    bucket: str = ""
    endpoint: str = ""

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: bytes | str) -> CachedImage:
        """ValueError (pydantic's ValidationError) for anything but a well-formed entry."""
        return cls.model_validate_json(raw)


class ImageCache:
    def __init__(
        self,
        client: aioredis.Redis | None,
        *,
        namespace: str,
        pool: str,
        bucket: str,
        endpoint: str,
        ttl_seconds: int,
        metrics: WorkerMetrics,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client  # None: caching disabled for this pool
        self.namespace = namespace
        self.pool = pool
        self.bucket = bucket  # the pool's objects: an entry pointing elsewhere is a miss
        self.endpoint = endpoint
        self.prefix = naming.object_prefix(namespace, pool)
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
            raw = await self.client.mget([self.key(d) for d in digests])
        except Exception as exc:
            self._failed("get", exc)
            return None
        self._recovered()
        return [self._usable(value) if value else None for value in raw]

    def key(self, digest: str) -> str:
        return naming.cache_key(self.namespace, self.pool, digest)

    def _usable(self, value: bytes | str) -> CachedImage | None:
        """The entry, if it parses and points at an object this pool's store serves."""
        try:
            entry = CachedImage.from_json(value)
        except (ValidationError, ValueError, TypeError):
            return None  # unreadable entry: regenerate and overwrite
        if (entry.bucket, entry.endpoint) != (self.bucket, self.endpoint):
            return None  # another bucket or endpoint: its URL would not work here
        if not entry.key.startswith(self.prefix):
            return None  # not this pool's object: never presigned by this pool
        return entry

    async def put_many(self, items: Sequence[tuple[str, CachedImage]]) -> bool:
        if not items or self.client is None or not self.available():
            return False
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for digest, entry in items:
                    stamped = entry.model_copy(
                        update={"bucket": self.bucket, "endpoint": self.endpoint})
                    pipe.set(self.key(digest), stamped.to_json(), ex=self.ttl)
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
