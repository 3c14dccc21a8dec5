"""Chaos among the workers themselves: kill -9 under load, rebalance churn, a graceful
scale-down while busy. Real worker processes on the real stack; see harness.py."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from tests.chaos.harness import Crew, chaos_run, seconds
from tests.integration.worker.harness import pool_of


async def test_kill_9_a_random_worker_every_few_seconds(stack: Any, chaos_tmp: Path) -> None:
    async with pool_of(stack, chaos_tmp, "kill9", batch=4) as pool:
        crew = Crew(pool, size=3)
        await crew.start()
        try:
            async def fault() -> None:
                until = time.monotonic() + seconds(120, least=30)
                while time.monotonic() < until:
                    await asyncio.sleep(random.uniform(3, 6))
                    crew.kill_random()

            run = await chaos_run("kill-9", pool, crew, fault=fault, baseline_s=seconds(20),
                                  recover_s=seconds(30, least=15))
        finally:
            await crew.stop()
    run.figures.save()
    fig = run.figures
    assert fig.lost == 0 and fig.divergent == 0, run.explain()
    assert set(fig.statuses) == {"succeeded"}, run.explain()  # no load request refused
    assert fig.lag_after_drain == 0, run.explain()
    assert fig.failed_ids == 0 and not fig.dlq, run.explain()  # no neighbour dead-lettered
    assert fig.worker_restarts == 0, run.explain()


async def test_scale_between_1_and_6_workers_every_10_s(stack: Any, chaos_tmp: Path) -> None:
    async with pool_of(stack, chaos_tmp, "churn", batch=4) as pool:
        crew = Crew(pool, size=2)
        await crew.start()
        try:
            async def fault() -> None:
                until = time.monotonic() + seconds(90, least=30)
                sizes = [1, 6, 3, 5, 1, 4, 2, 6, 1]
                for size in sizes:
                    if time.monotonic() >= until:
                        break
                    await crew.scale(size)
                    await asyncio.sleep(10)
                await crew.scale(2)

            run = await chaos_run("churn", pool, crew, fault=fault, baseline_s=seconds(20),
                                  recover_s=seconds(30, least=15))
        finally:
            await crew.stop()
    run.figures.save()
    fig = run.figures
    assert fig.lost == 0 and fig.divergent == 0, run.explain()
    assert set(fig.statuses) == {"succeeded"}, run.explain()  # no load request refused
    assert fig.lag_after_drain == 0, run.explain()
    assert fig.failed_ids == 0 and not fig.dlq, run.explain()
    assert fig.worker_restarts == 0 and fig.unclean_drains == 0, run.explain()


async def test_graceful_scale_down_by_two_while_busy(stack: Any, chaos_tmp: Path) -> None:
    async with pool_of(stack, chaos_tmp, "down2", batch=4) as pool:
        crew = Crew(pool, size=4)
        await crew.start()
        try:
            async def fault() -> None:
                await crew.scale(2)
                await asyncio.sleep(seconds(20, least=10))

            run = await chaos_run("scale-down-2", pool, crew, fault=fault, outstanding=32,
                                  baseline_s=seconds(20), recover_s=seconds(20, least=10),
                                  resend=0.0)
        finally:
            await crew.stop()
    run.figures.save()
    fig = run.figures
    assert fig.lost == 0 and fig.divergent == 0, run.explain()
    assert set(fig.statuses) == {"succeeded"}, run.explain()  # no load request refused
    assert fig.duplicate_messages == 0, run.explain()  # drained, not replayed
    assert len(crew.drain_exits) == 2 and fig.unclean_drains == 0, run.explain()
    assert fig.lag_after_drain == 0 and fig.worker_restarts == 0, run.explain()
