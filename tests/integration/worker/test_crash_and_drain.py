"""Crash and drain of a real worker process: SIGKILL mid-batch loses nothing, SIGTERM finishes
the batch in hand and exits 0, POST /drain stops serving.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from imagegen_api import naming

from tests.integration.worker.harness import (
    NAMESPACE,
    TIERS,
    pool_of,
    request,
    wait_for_log,
    wait_running,
)

pytestmark = pytest.mark.integration


class TestCrashAndDrain:
    async def test_sigkill_mid_batch_loses_nothing(self, stack: Any, package_tmp: Path) -> None:
        async with pool_of(stack, package_tmp, "kill", batch=4) as pool:
            victim = await pool.spawn(faults="delay_generate=3")
            async with pool.client() as client:
                reqs = [request(f"a cabin {i}", tier=TIERS[i % 3], seed=300 + i)
                        for i in range(12)]
                ids = await client.submit(reqs)
                await wait_for_log(victim, "batch generated", within=60)
                # The next batch is in its pipeline now (the 3 s delay): kill it there.
                await asyncio.sleep(1.0)
                victim.proc.kill()
                victim.proc.wait()
                answered_before = set(client.results)
                survivor = await pool.spawn()
                results = await client.wait(ids, within=120)
                await asyncio.sleep(2.0)
                dups = dict(client.duplicates)
            assert set(results) == set(ids), f"missing: {set(ids) - set(results)}"
            assert all(r.status == "succeeded" for r in results.values())
            assert answered_before != set(ids), "the kill came too late to test anything"
            assert any(r.worker == survivor.name for r in results.values())
            # The only allowed duplicate: published by the victim right before it died.
            assert set(dups) <= answered_before, dups
            assert await pool.wait_lag_zero() == 0

    async def test_sigterm_finishes_the_batch_in_hand_and_exits_0(
        self, stack: Any, package_tmp: Path
    ) -> None:
        async with pool_of(stack, package_tmp, "term", batch=4) as pool:
            worker = await pool.spawn(faults="delay_generate=2")
            async with pool.client() as client:
                reqs = [request(f"a desert train {i}", seed=500 + i) for i in range(12)]
                ids = await client.submit(reqs)
                await wait_running(client, ids, within=30)
                await asyncio.sleep(0.3)  # the first batch is in the pipeline (2 s delay)
                t0 = time.monotonic()
                worker.proc.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(worker.proc.wait, 60)
                elapsed = time.monotonic() - t0
                assert code == 0, worker.tail()
                assert elapsed < 15, elapsed
                await asyncio.sleep(1.0)
                answered = set(client.results)
                assert answered, "the batch in hand was not published"
                assert len(answered) < len(ids), "nothing was left to hand over"
                lag = await pool.lag()
                assert lag == len(ids) - len(answered), (lag, len(answered))
                hb = aioredis.from_url(stack.redis_url)
                try:
                    gone = await hb.hget(naming.workers_key(NAMESPACE, pool.name), worker.name)
                finally:
                    await hb.aclose()
                assert gone is None  # heartbeat removed on a clean exit
                logs = worker.log_lines()
                assert any(rec.get("msg") == "drained" for rec in logs)
                await pool.spawn()
                results = await client.wait(ids, within=120)
                await asyncio.sleep(1.0)
                assert set(results) == set(ids)
                assert sum(client.duplicates.values()) == 0
            assert await pool.wait_lag_zero() == 0

    async def test_post_drain_stops_serving_finishes_the_batch_and_exits_0(
        self, stack: Any, package_tmp: Path
    ) -> None:
        # Issue 17: a drained worker exits (it used to idle NotReady until a signal). A batch in
        # hand (2 s in the pipeline) keeps it draining long enough to watch its probes.
        async with pool_of(stack, package_tmp, "drain") as pool:
            worker = await pool.spawn(faults="delay_generate=2")
            async with pool.client() as client:
                [rid] = await client.submit([request("a paper lantern", seed=41)])
                await wait_running(client, [rid], within=30)
                status, body = await asyncio.to_thread(worker.post, "/drain")
                assert status == 202 and json.loads(body)["draining"]
                assert (await asyncio.to_thread(worker.get, "/readyz"))[0] == 503
                assert (await asyncio.to_thread(worker.get, "/healthz"))[0] == 200
                assert (await asyncio.to_thread(worker.get, "/livez"))[0] == 200
                # No signal: the drained worker leaves on its own, cleanly.
                assert await asyncio.to_thread(worker.proc.wait, 60) == 0, worker.tail()
                assert any(rec.get("msg") == "drained" for rec in worker.log_lines())
                results = await client.wait([rid], within=30)
            assert results[rid].status == "succeeded"  # the batch in hand was published
            assert await pool.wait_lag_zero() == 0

