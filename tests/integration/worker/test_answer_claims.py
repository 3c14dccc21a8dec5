"""Answer manifests (`claims`): one request id, one set of images, even when the job store is
unreachable (issue 17: the redis-stopped / redis-frozen chaos scenarios regenerated an id in
another batch size and published other bytes). On the real MinIO; the stages test wires the
worker with a job store whose Redis refuses connections.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import pytest
from imagegen_api.messages import ErrorInfo, GenerationResult, ImageRef, Timings
from imagegen_worker import wiring
from imagegen_worker.claims import AnswerClaims
from imagegen_worker.metrics import WorkerMetrics

from tests.integration.worker.harness import free_port
from tests.integration.worker.stages import ColourRunner, Stages, StagesEnv

pytestmark = pytest.mark.integration


def succeeded(request_id: str, n: int) -> GenerationResult:
    image = ImageRef(key=f"k/{n}.png", url="http://x", width=8, height=8, seed=n,
                     sha256=f"{n:064x}", format="png")
    return GenerationResult(request_id=request_id, status="succeeded", images=[image],
                            timings=Timings(total_ms=1.0), worker=f"w-{n}", attempts=1,
                            finished_at=time.time())


async def test_the_first_claim_wins_and_later_ones_get_it(stages_env: StagesEnv) -> None:
    claims = AnswerClaims(stages_env.store, WorkerMetrics())
    rid = f"claim-{uuid.uuid4().hex[:8]}"
    assert await claims.lookup(rid) is None
    first = succeeded(rid, 1)
    assert await claims.claim(first) is first
    later = await claims.claim(succeeded(rid, 2))
    assert later.worker == "w-1" and later.images[0].sha256 == first.images[0].sha256
    stored = await claims.lookup(rid)
    assert stored is not None and stored.worker == "w-1"


async def test_concurrent_claims_agree_on_one_answer(stages_env: StagesEnv) -> None:
    claims = AnswerClaims(stages_env.store, WorkerMetrics())
    rid = f"race-{uuid.uuid4().hex[:8]}"
    mine = [succeeded(rid, n) for n in range(8)]
    won = await asyncio.gather(*(claims.claim(r) for r in mine))
    assert len({w.worker for w in won}) == 1, [w.worker for w in won]
    assert sum(w is r for w, r in zip(won, mine, strict=True)) == 1


async def test_only_succeeded_answers_are_claimed(stages_env: StagesEnv) -> None:
    claims = AnswerClaims(stages_env.store, WorkerMetrics())
    rid = f"failed-{uuid.uuid4().hex[:8]}"
    failed = GenerationResult(
        request_id=rid, status="failed", timings=Timings(total_ms=1.0), attempts=1,
        error=ErrorInfo(code="generation_failed", message="x", field=None, limit=None))
    assert await claims.claim(failed) is failed
    assert await claims.lookup(rid) is None


class ChangingRunner(ColourRunner):
    """Other bytes on every generation, as a regeneration in another batch size gives."""

    def __init__(self) -> None:
        super().__init__()
        self.shade = itertools.count(1)

    def generate(self, jobs: list[Any]) -> list[Any]:
        from PIL import Image

        self.calls.append(len(jobs))
        return [Image.new("RGB", (j.width, j.height), (j.seed % 256, next(self.shade) % 256, 0))
                for j in jobs]


def keys(result: GenerationResult) -> list[tuple[str, str]]:
    return [(i.key, i.sha256) for i in result.images]


async def test_job_store_down_one_id_still_gets_one_set_of_images(
        stages_env: StagesEnv) -> None:
    dead = wiring.records_client(f"redis://127.0.0.1:{free_port()}/1")
    try:
        st = Stages(stages_env.pool, dead, stages_env.publisher, stages_env.store,
                    runner=ChangingRunner())
        body = {"request_id": "twice", "prompt": "a fox", "tier": "fast"}
        # Two copies queued before either is answered: both generate (no record to lease),
        # and both publish the images of the one that claimed first.
        assert len(await st.feed(body, body)) == 2
        await st.run_all()
        first, second = st.answers("twice")
        assert first.status == second.status == "succeeded"
        assert keys(first) == keys(second)
        generated = len(st.runner.calls)
        # A third copy after the answer: replayed from the manifest, not generated again.
        assert await st.feed(body) == []
        *_, third = st.answers("twice")
        assert keys(third) == keys(first)
        assert len(st.runner.calls) == generated
        assert st.metrics.redis_errors.labels("intake")._value.get() >= 3
    finally:
        await dead.aclose()
