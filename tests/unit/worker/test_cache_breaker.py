"""The cache switch: a pool with caching disabled never asks Redis and never answers.

Behaviour against a real Redis (hits, misses, TTLs, unreadable entries, Redis going away and
coming back, per-pool keys) is tested in tests/integration/worker/test_cache_store.py.
"""

from __future__ import annotations

from imagegen_worker.cache import CachedImage, ImageCache
from imagegen_worker.metrics import WorkerMetrics

ENTRY = CachedImage(key="ns/p/x.png", sha256="a" * 64, size=10, seed=1, width=64, height=64,
                    format="png")


async def test_disabled_cache_never_answers() -> None:
    metrics = WorkerMetrics()
    cache = ImageCache(None, namespace="ns", pool="p", bucket="b", endpoint="http://s3",
                       ttl_seconds=60, metrics=metrics)
    assert not cache.enabled and not cache.available()
    assert await cache.get_many(["a"]) is None
    assert not await cache.put_many([("a", ENTRY)])
    assert metrics.cache_errors._value.get() == 0  # type: ignore[attr-defined]


def test_entry_round_trips_through_json() -> None:
    assert CachedImage.from_json(ENTRY.to_json()) == ENTRY
