"""Delivery through a real worker process: every request answered exactly once across tiers,
seeds, heartbeats, probes and metrics.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis
from imagegen_api import naming
from imagegen_api.messages import Heartbeat

from tests.integration.worker.harness import (
    NAMESPACE,
    TIERS,
    Pool,
    Worker,
    request,
)

pytestmark = pytest.mark.integration


class TestDelivery:
    async def test_requests_across_tiers_are_answered_exactly_once(
        self, shared: tuple[Pool, Worker]
    ) -> None:
        pool, worker = shared
        reqs = [request(f"a lighthouse number {i}", tier=TIERS[i % 3], seed=1000 + i,
                        num_images=1 + i % 2, output_format=("png", "webp")[i % 2])
                for i in range(18)]
        async with pool.client() as client:
            results = await client.generate(reqs, within=120)
            await asyncio.sleep(1.0)  # time for any duplicate to show up
            assert set(results) == {r.request_id for r in reqs}
            assert sum(client.duplicates.values()) == 0
            for req in reqs:
                res = results[req.request_id]
                assert res.status == "succeeded", res
                assert res.tier == req.tier and res.worker == worker.name
                assert len(res.images) == req.num_images
                assert [img.seed for img in res.images] == [
                    (req.seed or 0) + i for i in range(req.num_images)]
                assert all(img.key.startswith(f"{NAMESPACE}/{pool.name}/") for img in res.images)
                assert all(img.key.endswith(f".{req.output_format}") for img in res.images)
                assert res.timings.generate_ms > 0 and res.timings.total_ms > 0
                record = await client.status(req.request_id)
                assert record is not None and record.state == "succeeded"
                assert record.result is not None
                assert [i.key for i in record.result.images] == [i.key for i in res.images]
            downloaded = await client.download([results[reqs[1].request_id]],
                                               pool.tmp / "downloads")
        assert downloaded and downloaded[0].read_bytes()[:4] in (b"RIFF", b"\x89PNG")
        assert await pool.wait_lag_zero() == 0

    async def test_unseeded_requests_get_a_seed_and_are_not_cached(
        self, shared: tuple[Pool, Worker]
    ) -> None:
        pool, _ = shared
        reqs = [request("a paper boat"), request("a paper boat")]
        async with pool.client() as client:
            results = await client.generate(reqs, within=60)
        a, b = (results[r.request_id] for r in reqs)
        assert a.status == b.status == "succeeded"
        assert not a.cache_hit and not b.cache_hit
        assert a.images[0].seed != b.images[0].seed

    async def test_heartbeat_reports_the_worker_ready(self, shared: tuple[Pool, Worker]) -> None:
        pool, worker = shared
        client = aioredis.from_url(pool.stack.redis_url)
        try:
            raw = await client.hget(naming.workers_key(NAMESPACE, pool.name), worker.name)
        finally:
            await client.aclose()
        assert raw is not None
        hb = Heartbeat.from_bytes(raw)
        assert hb.state == "ready" and hb.ready and hb.role == "warm"
        assert hb.interval_seconds == 1 and hb.worker == worker.name
        assert hb.models == ["tiny"] and hb.model_revision
        assert hb.is_fresh(time.time())


    async def test_probes_and_metrics_are_served(self, shared: tuple[Pool, Worker]) -> None:
        _, worker = shared
        assert (await asyncio.to_thread(worker.get, "/healthz")) == (200, "ok\n")
        status, body = await asyncio.to_thread(worker.get, "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True
        status, text = await asyncio.to_thread(worker.get, "/metrics")
        assert status == 200
        for family in ("imagegen_requests_total", "imagegen_queue_wait_seconds_bucket",
                       "imagegen_generate_seconds_bucket", "imagegen_batch_size_bucket",
                       "imagegen_cache_hits_total", "imagegen_in_flight"):
            assert family in text, family

