"""Concurrent copies of one request id, through the worker's real stages (issue 17, item 8):
intake → scheduler → batch runner → answers wired by `wiring` on the real Redis, Kafka and MinIO
(the `st` fixture of tests/integration/worker/stages.py; only the model is a stand-in).

- Two messages with one id in flight: one attempt counted, one generation, the second copy is
  parked and answered from the first one's record (the same images).
- An unparseable message whose key is the id of a running request is rejected under its own id
  (`invalid:<topic:partition:offset>`); the running request's answer is its own.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.worker.stages import Stages

pytestmark = pytest.mark.integration


async def answered(st: Stages, name: str, count: int, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while len(st.answers(name)) < count:
        assert time.monotonic() < deadline, f"{name}: {st.answers(name)}"
        await asyncio.sleep(0.05)


async def test_two_copies_of_one_id_cost_one_attempt_and_one_generation(st: Stages) -> None:
    body = {"request_id": "twin", "prompt": "a fox", "tier": "fast"}
    works = await st.feed(body, body)  # two messages (offsets 0 and 1), both queued
    assert len(works) == 2
    await st.run_all()
    await answered(st, "twin", 2)
    first, second = st.answers("twin")
    assert st.runner.calls == [1]  # the copy was not generated
    assert first.status == second.status == "succeeded" and first.images
    assert [(i.key, i.sha256, i.seed) for i in first.images] == [
        (i.key, i.sha256, i.seed) for i in second.images]  # one answer: the same images
    record = await st.record("twin")
    assert record["attempts"] == "1" and record["state"] == "succeeded"
    assert sorted(st.released) == [st.src(0), st.src(1)]


async def test_garbage_with_a_running_requests_key_does_not_answer_it(st: Stages) -> None:
    [work] = await st.feed({"request_id": "real", "prompt": "a fox"})
    batch = st.scheduler.next_batch(flush=True)
    assert batch is not None
    generated = await st.batches.generate(batch)  # running: leased, one attempt
    assert generated is not None
    garbage = st.raw_ref(b"{not json", key=st.rid("real").encode())
    assert await st.intake.handle(garbage) is None
    own = f"invalid:{garbage.source}"
    [rejection] = [r for r in st.publisher.results if r.request_id == own]
    assert rejection.status == "rejected"
    assert st.answers("real") == []  # nothing published under the running request's id
    await st.batches.deliver(generated)
    [res] = st.answers("real")
    assert res.status == "succeeded" and res.attempts == 1
    assert (await st.record("real"))["state"] == "succeeded"
    assert sorted(st.released) == sorted([work.ref.source, garbage.source])
