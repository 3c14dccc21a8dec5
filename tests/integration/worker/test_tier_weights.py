"""A backlog across tiers is served by the tiers' weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.worker.harness import (
    TIERS,
    pool_of,
    request,
)

pytestmark = pytest.mark.integration


class TestTierWeights:
    async def test_backlog_is_served_by_weight(self, stack: Any, package_tmp: Path) -> None:
        per_tier = 30
        async with pool_of(stack, package_tmp, "weights", batch=1) as pool:
            async with pool.client() as client:
                reqs = [request(f"{tier} prompt {i}", tier=tier, seed=i)
                        for i in range(per_tier) for tier in TIERS]
                ids = await client.submit(reqs)  # the backlog exists before any worker
                await pool.spawn(faults="delay_generate=0.02")
                results = await client.wait(ids, within=240)
                assert len(results) == len(reqs)
                order = sorted(ids, key=lambda rid: results[rid].finished_at or 0.0)
        tier_of = {r.request_id: r.tier for r in reqs}
        first = [tier_of[rid] for rid in order[:32]]
        counts = {t: first.count(t) for t in TIERS}
        # Expected 20 / 10 / 2 for weights 10/5/1; the worker fetches unevenly at first.
        assert counts["turbo"] >= 16, counts
        assert 5 <= counts["fast"] <= 14, counts
        assert counts["relax"] <= 5, counts
        mean_pos = {t: sum(i for i, rid in enumerate(order) if tier_of[rid] == t) / per_tier
                    for t in TIERS}
        assert mean_pos["turbo"] < mean_pos["fast"] < mean_pos["relax"], mean_pos

