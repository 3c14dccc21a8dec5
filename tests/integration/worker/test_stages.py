"""The request path in-process: intake → scheduler → batch runner → answers, wired by
`imagegen_worker.wiring` exactly as the worker wires it, on the real Redis, Kafka and MinIO;
only the model is a stand-in (see `stages`).
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from tests.integration.worker.stages import Stages

pytestmark = pytest.mark.integration


class TestStages:
    async def test_rejection_is_answered_and_released(self, st: Stages) -> None:
        await st.feed({"request_id": "bad", "prompt": "x", "width": 65})
        [res] = st.answers("bad")
        assert res.status == "rejected"
        assert res.error is not None and res.error.field == "width"
        assert res.error.limit == "multiple of 8"
        assert st.released == [st.src(0)]
        record = await st.record("bad")
        assert record["state"] == "rejected" and record["published"] == "1"

    async def test_batch_is_generated_uploaded_cached_and_answered(self, st: Stages) -> None:
        works = await st.feed(*({"request_id": f"r{i}", "prompt": "fox", "seed": 10 * i,
                                 "num_images": 1 + i % 2} for i in range(3)))
        assert len(works) == 3 and st.released == []  # nothing answered: nothing released
        await st.run_all()
        assert st.runner.calls == [4]  # 1+2+1 images: one pipeline call
        for i in range(3):
            [res] = st.answers(f"r{i}")
            assert res.status == "succeeded" and not res.cache_hit and res.attempts == 1
            assert [img.seed for img in res.images] == [10 * i + k for k in range(1 + i % 2)]
            assert res.model_revision == st.runner.revision and res.worker == "w-0"
            for img in res.images:
                data = await st.fetch(img.url)
                assert hashlib.sha256(data).hexdigest() == img.sha256
                assert img.key == st.store.key_for(img.sha256, "png")
            record = await st.record(f"r{i}")
            assert record["state"] == "succeeded" and record["published"] == "1"
            assert record["attempts"] == "1"
        assert sorted(st.released) == [st.src(i) for i in range(3)]
        assert st.metrics.cache_misses._value.get() == 3  # type: ignore[attr-defined]

    async def test_seeded_repeat_is_a_cache_hit_with_a_working_url(self, st: Stages) -> None:
        await st.feed({"request_id": "a", "prompt": "fox", "seed": 3})
        await st.run_all()
        calls = list(st.runner.calls)
        assert await st.feed({"request_id": "b", "prompt": "fox", "seed": 3}) == []
        [first], [hit] = st.answers("a"), st.answers("b")
        assert hit.cache_hit and hit.timings.generate_ms == 0
        assert hit.images[0].key == first.images[0].key
        data = await st.fetch(hit.images[0].url)
        assert hashlib.sha256(data).hexdigest() == first.images[0].sha256
        assert st.runner.calls == calls

    async def test_redelivered_answered_message_is_skipped_not_republished(
        self, st: Stages
    ) -> None:
        body = {"request_id": "once", "prompt": "fox"}
        work = await st.intake.handle(st.ref(body, offset=40))
        assert work is not None
        st.scheduler.push(work, tier=work.tier, key=work.compat_key)
        await st.run_all()
        assert len(st.answers("once")) == 1
        assert await st.intake.handle(st.ref(body, offset=40)) is None  # same message again
        assert len(st.answers("once")) == 1
        assert st.released.count(st.src(40)) == 2

    async def test_new_message_reusing_an_id_gets_the_recorded_result(self, st: Stages) -> None:
        await st.feed({"request_id": "dup", "prompt": "fox"})
        await st.run_all()
        assert await st.feed({"request_id": "dup", "prompt": "something else"}) == []
        first, again = st.answers("dup")
        assert again.images[0].key == first.images[0].key
        assert again.images[0].seed == first.images[0].seed
        assert len(st.runner.calls) == 1

    async def test_poison_is_retried_alone_then_dead_lettered(self, st: Stages) -> None:
        await st.feed({"request_id": "bad", "prompt": "a POISON apple"},
                      {"request_id": "good", "prompt": "an apple"})
        await st.run_all()
        assert st.runner.calls == [2, 1, 1, 1]  # together once, then each alone; bad twice more
        [good] = st.answers("good")
        assert good.status == "succeeded" and good.attempts == 2
        [bad] = st.answers("bad")
        assert bad.status == "failed" and bad.attempts == 3
        assert bad.error is not None and bad.error.code == "generation_failed"
        assert bad.error.limit == "maxAttempts=3" and "NaNs everywhere" in bad.error.message
        [letter] = [x for x in st.publisher.letters if x.request_id == st.rid("bad")]
        assert letter.attempts == 3
        assert json.loads(letter.request)["prompt"] == "a POISON apple"
        assert sorted(st.released) == [st.src(0), st.src(1)]
        assert (await st.record("bad"))["state"] == "failed"

    async def test_attempts_used_up_by_dead_workers_go_to_the_dlq_without_generating(
        self, st: Stages
    ) -> None:
        await st.redis.hset(st.records.key(st.rid("crashy")),
                            mapping={"request_id": st.rid("crashy"), "state": "running",
                                     "attempts": "3"})
        await st.redis.expire(st.records.key(st.rid("crashy")), 600)
        assert await st.feed({"request_id": "crashy", "prompt": "fox"}) == []
        [res] = st.answers("crashy")
        assert res.status == "failed" and res.error is not None
        assert res.error.code == "max_attempts_exceeded"
        assert st.runner.calls == []
        assert [x.request_id for x in st.publisher.letters].count(st.rid("crashy")) == 1

    async def test_deadline_passing_in_the_queue_expires_the_request(self, st: Stages) -> None:
        [work] = await st.feed({"request_id": "late", "prompt": "fox",
                                "deadline": time.time() + 0.05})
        object.__setattr__(work.request, "deadline", time.time() - 1)
        await st.run_all()
        [res] = st.answers("late")
        assert res.status == "expired" and st.runner.calls == []
        assert res.error is not None and res.error.field == "deadline"

    async def test_a_message_that_breaks_validation_is_rejected_not_fatal(
        self, st: Stages
    ) -> None:
        def broken(_prompt: str) -> int:
            raise ValueError("tokenizer exploded")

        st.runner.count_tokens = broken  # type: ignore[method-assign]
        assert await st.feed({"request_id": "weird", "prompt": "fox"}) == []
        [res] = st.answers("weird")
        assert res.status == "rejected" and res.error is not None
        assert res.error.code == "invalid_request" and "tokenizer exploded" in res.error.message
        assert st.released == [st.src(0)]

