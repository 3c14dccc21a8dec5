"""A request that fails every attempt goes to the dead-letter topic; its neighbours succeed.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.worker.harness import (
    Pool,
    Worker,
    request,
)

pytestmark = pytest.mark.integration


class TestDeadLetter:
    async def test_failing_request_is_dead_lettered_after_max_attempts(
        self, shared: tuple[Pool, Worker]
    ) -> None:
        pool, worker = shared
        poison = request("a POISON apple", seed=5)
        fine = [request("a healthy apple", seed=6 + i) for i in range(3)]
        async with pool.client() as client:
            results = await client.generate([poison, *fine], within=90)
        bad = results[poison.request_id]
        assert bad.status == "failed" and bad.error is not None
        assert bad.error.code == "generation_failed" and bad.error.limit == "maxAttempts=3"
        assert bad.attempts == 3
        assert all(results[r.request_id].status == "succeeded" for r in fine)
        letters = [d for d in await pool.dead_letters() if d["request_id"] == poison.request_id]
        assert len(letters) == 1
        assert json.loads(letters[0]["request"])["prompt"] == "a POISON apple"
        assert letters[0]["attempts"] == 3 and letters[0]["worker"] == worker.name
        assert worker.metric("imagegen_dlq_total") >= 1
        assert await pool.wait_lag_zero() == 0

