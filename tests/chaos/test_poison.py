"""Poison under load (issue 17 items 1, 2, 7, 8): messages that once crashed, blocked or
confused a pool are sent in the middle of a normal load. The pool keeps serving everybody else,
no worker restarts (except the one a process-killing request takes down each time), every
partition is drained and committed, and each poison message ends as a rejection or a dead letter.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.chaos.harness import WORKER_FAULTS, Crew, chaos_run, seconds
from tests.integration.worker.harness import RUN, pool_of, request

# Each huge prompt is ~900 kB: tokenising one took ~1.6 s on the event loop (item 7).
HUGE_PROMPT = "word " * 180_000
# Test hook of worker/imagegen_worker/faults.py: a batch holding this prompt SIGKILLs its worker.
KILL_HOOK = "kill_prompt=KILLME"


async def test_poison_set_under_load(stack: Any, chaos_tmp: Path) -> None:
    async with pool_of(stack, chaos_tmp, "poison", batch=4) as pool:
        crew = Crew(pool, size=2)
        await crew.start()
        surrogate_key = f"poison-surrogate-{RUN}"
        huge = [f"huge-{uuid.uuid4().hex[:12]}" for _ in range(8)]
        dup = request("one id sent five times at once", seed=4242)
        # short: the tiny model allows 20 tokens, and its tokenizer splits rare words
        shared_key = request("a shared key", seed=4343)
        try:
            async with pool.client() as client:
                async def fault() -> None:
                    # item 1: valid JSON whose id is a lone surrogate (not encodable as UTF-8)
                    await client.submit_raw(
                        "fast", b'{"request_id":"\\ud800","prompt":"x"}',
                        surrogate_key.encode())
                    # item 7: eight huge prompts in one fetch
                    for rid in huge:
                        body = {"request_id": rid, "prompt": HUGE_PROMPT, "tier": "relax"}
                        await client.submit_raw("relax", json.dumps(body).encode(),
                                                rid.encode())
                    # item 8: concurrent duplicates of one id; an unparseable message sharing
                    # the key of a request being served
                    await client.submit([dup] * 5)
                    await client.submit([shared_key])
                    await client.submit_raw("fast", b"{not json",
                                            shared_key.request_id.encode())
                    await client.wait([dup.request_id, shared_key.request_id, *huge],
                                      within=seconds(60, least=60))

                run = await chaos_run("poison", pool, crew, fault=fault,
                                      baseline_s=seconds(15, least=10),
                                      recover_s=seconds(30, least=15))
        finally:
            await crew.stop()
    run.figures.save()
    fig, found = run.figures, run.audit
    assert fig.lost == 0 and fig.divergent == 0, run.explain()
    assert set(fig.statuses) == {"succeeded"}, run.explain()  # no load request refused
    assert fig.lag_after_drain == 0, run.explain()  # nothing blocks a partition
    assert fig.worker_restarts == 0, run.explain()  # item 1: no crash loop
    # item 1: the surrogate message is answered (by its key) or dead-lettered, never retried
    # forever.
    answered_raw = set(found.results) | {d.get("request_id") for d in found.dead_letters}
    assert surrogate_key in answered_raw or "\ud800" in answered_raw, run.explain()
    # item 7: every huge prompt refused, naming the prompt and its limit
    for rid in huge:
        res = found.results.get(rid)
        assert res, f"{rid} unanswered\n{run.explain()}"
        assert res[0].status == "rejected" and res[0].error is not None, res
        assert res[0].error.field == "prompt", res
    # item 8: one generation for the five duplicates, one attempt, the same images everywhere
    dups = found.results[dup.request_id]
    assert {r.status for r in dups} == {"succeeded"}, dups
    assert {found.signature(r) for r in dups} == {found.signature(dups[0])}, dups
    assert {r.attempts for r in dups} == {1}, dups
    # item 8: the unparseable twin is refused without overriding the valid request's answer
    twins = found.results[shared_key.request_id]
    served = [r for r in twins if r.status == "succeeded"]
    assert served, twins
    others = [r for r in twins if not (r.error and r.error.code == "invalid_json")]
    assert {found.signature(r) for r in others} == {found.signature(served[0])}, twins


async def test_a_request_that_kills_its_worker(stack: Any, chaos_tmp: Path) -> None:
    """Item 2: the killer is dead-lettered after max attempts; its batch neighbours are not."""
    async with pool_of(stack, chaos_tmp, "killer", batch=4, max_attempts=3) as pool:
        crew = Crew(pool, size=2, faults=f"{WORKER_FAULTS};{KILL_HOOK}")
        await crew.start()
        killer = request("KILLME please", seed=7)
        try:
            async with pool.client() as client:
                async def fault() -> None:
                    await client.submit([killer])
                    await client.wait([killer.request_id], within=seconds(120, least=120))

                run = await chaos_run("process-killer", pool, crew, fault=fault,
                                      baseline_s=seconds(15, least=10),
                                      recover_s=seconds(30, least=15), drain_within=240)
        finally:
            await crew.stop()
    run.figures.save()
    fig, found = run.figures, run.audit
    assert fig.lost == 0 and fig.divergent == 0, run.explain()
    assert set(fig.statuses) == {"succeeded"}, run.explain()  # no load request refused
    assert fig.lag_after_drain == 0, run.explain()
    letters = [d for d in found.dead_letters if d.get("request_id") == killer.request_id]
    assert len(letters) == 1, run.explain()
    assert found.results[killer.request_id][0].status == "failed", run.explain()
    # Only the killer: the neighbours of its batches were answered normally.
    assert fig.failed_ids == 0 and len(found.dead_letters) == 1, run.explain()
    # The killer takes down one worker per attempt, no more.
    assert fig.worker_restarts <= 3, run.explain()
