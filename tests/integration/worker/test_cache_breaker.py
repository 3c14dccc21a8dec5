"""The cache breaker against a Redis server that goes away and comes back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from imagegen_worker import wiring
from imagegen_worker.cache import CachedImage, ImageCache
from imagegen_worker.metrics import WorkerMetrics

from tests.integration.worker.harness import (
    free_port,
    start_redis,
)

pytestmark = pytest.mark.integration


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestCacheBreaker:
    async def test_redis_down_degrades_then_recovers(self, tmp_path: Path) -> None:
        port = free_port()
        server = start_redis(port, tmp_path)
        # The client as the worker builds it for the cache: short timeouts, no retries.
        client = wiring.cache_client(f"redis://127.0.0.1:{port}")
        clock, metrics = ManualClock(), WorkerMetrics()
        cache = ImageCache(client, namespace="ns", pool="p", bucket="b", endpoint="http://s3",
                           ttl_seconds=60, metrics=metrics, retry_after=5, clock=clock)
        entry = CachedImage(key="ns/p/x.png", sha256="a" * 64, size=10, seed=1, width=64,
                            height=64, format="png", bucket="b", endpoint="http://s3")
        try:
            assert await cache.get_many(["a", "b"]) == [None, None]
            assert await cache.put_many([("a", entry)])
            assert await cache.get_many(["a", "b"]) == [entry, None]
            assert await client.ttl(cache.key("a")) > 0
            await client.set(cache.key("broken"), "{broken")
            assert await cache.get_many(["broken"]) == [None]  # unreadable: a miss

            server.terminate()
            server.wait(10)
            assert await cache.get_many(["a"]) is None  # unavailable, not an error
            assert metrics.cache_errors._value.get() == 1  # type: ignore[attr-defined]
            # Breaker open: Redis is not asked again (asking would count another error).
            assert await cache.get_many(["a"]) is None
            assert not await cache.put_many([("a", entry)])
            assert metrics.cache_errors._value.get() == 1  # type: ignore[attr-defined]

            server = start_redis(port, tmp_path)  # back, empty
            clock.now += 5
            assert await cache.get_many(["a"]) == [None]
            assert await cache.put_many([("a", entry)])
            assert await cache.get_many(["a"]) == [entry]
            assert metrics.cache_errors._value.get() == 1  # type: ignore[attr-defined]
        finally:
            await client.aclose()
            server.kill()
            server.wait()

