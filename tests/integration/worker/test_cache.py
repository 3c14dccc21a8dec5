"""The result cache and request-id reuse through a real worker process.
"""

from __future__ import annotations

import pytest

from tests.integration.worker.harness import (
    Pool,
    Worker,
    request,
)

pytestmark = pytest.mark.integration


class TestCache:
    async def test_repeat_is_answered_from_the_cache_without_generation(
        self, shared: tuple[Pool, Worker]
    ) -> None:
        pool, worker = shared
        first = request("a koi pond from above", seed=77, num_images=2)
        again = request("a koi pond from above", seed=77, num_images=2)
        async with pool.client() as client:
            r1 = (await client.generate([first], within=60))[first.request_id]
            batches = worker.metric("imagegen_batch_size_count")
            hits = worker.metric("imagegen_cache_hits_total")
            r2 = (await client.generate([again], within=60))[again.request_id]
        assert r1.status == r2.status == "succeeded"
        assert not r1.cache_hit and r2.cache_hit
        assert r2.timings.generate_ms == 0 and r2.timings.upload_ms == 0
        assert [i.key for i in r2.images] == [i.key for i in r1.images]
        assert [i.sha256 for i in r2.images] == [i.sha256 for i in r1.images]
        assert worker.metric("imagegen_batch_size_count") == batches  # no pipeline call
        assert worker.metric("imagegen_cache_hits_total") == hits + 1

    async def test_reused_request_id_gets_the_recorded_result(
        self, shared: tuple[Pool, Worker]
    ) -> None:
        pool, worker = shared
        req = request("a violin made of ice")
        async with pool.client() as client:
            r1 = (await client.generate([req], within=60))[req.request_id]
        batches = worker.metric("imagegen_batch_size_count")
        async with pool.client() as client:  # a new client: it only sees new messages
            r2 = (await client.generate([req], within=60))[req.request_id]
        assert r2.images[0].key == r1.images[0].key and r2.images[0].seed == r1.images[0].seed
        assert worker.metric("imagegen_batch_size_count") == batches
        assert worker.metric("imagegen_duplicates_total", action="replayed") >= 1

