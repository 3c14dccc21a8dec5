"""The fault paths of issue 17, in-process on the real stack (stages wired as the worker wires
them, see `stages`): poison ids and unserialisable answers, a request redelivered after a crash,
storage and Kafka outages, a frozen Redis, huge prompts. Dependencies are cut through a real TCP
hop (`harness.TcpProxy`) or, for Kafka whose brokers advertise their own address, the worker's
test-only fault hook `kafka_down`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from imagegen_api.messages import GenerationResult
from imagegen_worker import wiring
from imagegen_worker.faults import Faults
from imagegen_worker.storage import ObjectStore

from tests.integration.worker.harness import (
    NAMESPACE,
    TIERS,
    TcpProxy,
    pool_of,
    request,
    until,
    wait_for_log,
)
from tests.integration.worker.stages import Stages, StagesEnv

pytestmark = pytest.mark.integration


class TestPoison:
    async def test_a_lone_surrogate_request_id_is_rejected_not_fatal(self, st: Stages) -> None:
        # Valid JSON, not encodable as UTF-8: it used to break every Redis call and then the
        # result's serialisation (exit 1, offset never committed, the pool crash-looping).
        ref = st.raw_ref(b'{"request_id": "\\ud800", "prompt": "x"}', key=None)
        assert await st.intake.handle(ref) is None
        [res] = [r for r in st.publisher.results if r.request_id == f"invalid:{ref.source}"]
        assert res.status == "rejected" and res.error is not None
        assert (res.error.code, res.error.field) == ("invalid_field", "request_id")
        assert st.released == [ref.source]

    async def test_an_answer_that_cannot_be_serialised_is_dead_lettered_under_its_offset(
        self, st: Stages
    ) -> None:
        ref = st.raw_ref(json.dumps({"request_id": st.rid("x"), "prompt": "x"}).encode(),
                         key=st.rid("x").encode())
        unencodable = GenerationResult(request_id="\ud800", status="succeeded", tier="fast")
        await st.stages.answers.answer(ref, unencodable)
        [letter] = [x for x in st.publisher.letters if st.rid("x") in x.request]
        assert letter.request_id == f"unanswerable:{ref.source}"
        assert letter.error.code == "unanswerable"
        assert json.loads(letter.request)["request_id"] == st.rid("x")
        assert st.released == [ref.source]
        assert not st.records.breaker.open  # one bad key is not a Redis outage


class TestRedelivery:
    async def test_a_request_redelivered_after_a_crash_runs_alone(self, st: Stages) -> None:
        # Its first attempt started on a worker that died (the record says running, 1 attempt).
        key = st.records.key(st.rid("crashed"))
        await st.redis.hset(key, mapping={"request_id": st.rid("crashed"), "state": "running",
                                          "attempts": "1"})
        await st.redis.expire(key, 600)
        await st.feed({"request_id": "n0", "prompt": "fox"},
                      {"request_id": "crashed", "prompt": "fox"},
                      {"request_id": "n1", "prompt": "fox"})
        await st.run_all()
        assert sorted(st.runner.calls) == [1, 2]  # alone, and its neighbours together
        [crashed] = st.answers("crashed")
        assert crashed.status == "succeeded" and crashed.attempts == 2
        for name in ("n0", "n1"):
            [res] = st.answers(name)
            assert res.status == "succeeded" and res.attempts == 1


class TestStorageOutage:
    async def test_upload_is_retried_without_generating_again_or_counting_an_attempt(
        self, stages_env: StagesEnv, stack: Any
    ) -> None:
        s3 = urlsplit(stack.s3_endpoint)
        proxy = TcpProxy(s3.hostname or "127.0.0.1", s3.port or 80)
        await proxy.up()
        pool = stages_env.pool
        store = ObjectStore(pool.config.storage.model_copy(
            update={"endpoint": f"http://{proxy.address}"}), NAMESPACE, pool.name)
        st = stages_env.stages(store=store)
        try:
            await proxy.down()
            await st.feed({"request_id": "up", "prompt": "fox", "seed": 4})
            batch = st.scheduler.next_batch(flush=True)
            assert batch is not None
            generated = await st.batches.generate(batch)
            assert generated is not None
            delivery = asyncio.create_task(st.batches.deliver(generated))
            await until(lambda: st.outages.down == {"storage"}, within=60,
                        what="storage reported down")
            assert st.health.reasons == ["storage unavailable"]
            assert st.answers("up") == [] and st.released == []
            await proxy.up()
            await asyncio.wait_for(delivery, 60)
        finally:
            await proxy.down()
        [res] = st.answers("up")
        assert res.status == "succeeded" and res.attempts == 1
        assert st.runner.calls == [1]  # generated once
        assert (await st.record("up"))["attempts"] == "1"
        assert st.outages.down == frozenset() and st.health.reasons == []
        assert st.released == [st.src(0)]


class TestKafkaOutage:
    async def test_publish_failure_backs_off_and_answers_once_kafka_is_back(
        self, stages_env: StagesEnv, tmp_path: Path
    ) -> None:
        flag = tmp_path / "kafka-down"
        flag.touch()
        st = stages_env.stages(faults=Faults(kafka_down=str(flag)))
        await st.feed({"request_id": "k", "prompt": "fox"})
        run = asyncio.create_task(st.run_all())
        await until(lambda: st.outages.down == {"kafka"}, within=30, what="kafka reported down")
        assert st.health.reasons == ["kafka unavailable"]
        await until(lambda: st.outages.retries >= 2, within=30, what="publish retried")
        assert st.answers("k") == [] and st.released == []
        flag.unlink()
        await asyncio.wait_for(run, 60)
        [res] = st.answers("k")
        assert res.status == "succeeded" and res.attempts == 1
        assert st.runner.calls == [1]
        assert st.released == [st.src(0)]
        assert st.outages.down == frozenset()


class TestFrozenRedis:
    async def test_generation_goes_on_with_job_records_behind_a_breaker(
        self, stages_env: StagesEnv, stack: Any
    ) -> None:
        target = urlsplit(stack.redis_url)
        proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
        await proxy.up()
        client = wiring.records_client(f"redis://{proxy.address}")
        st = Stages(stages_env.pool, client, stages_env.publisher, stages_env.store)
        try:
            await proxy.freeze()  # connections accepted, nothing answered: a SIGSTOPped Redis
            await st.feed(*({"request_id": f"f{i}", "prompt": "fox", "seed": i}
                            for i in range(3)))
            await st.run_all()
            for i in range(3):
                [res] = st.answers(f"f{i}")
                assert res.status == "succeeded" and res.attempts == 1
            assert st.records.breaker.open
            assert st.metrics.redis_errors.labels("intake")._value.get() >= 1  # type: ignore[attr-defined]
            assert sorted(st.released) == [st.src(i) for i in range(3)]
        finally:
            await proxy.down()
            await client.aclose()


class TestHugePrompt:
    async def test_a_huge_prompt_is_refused_by_size_and_tokenising_is_off_the_loop(
        self, st: Stages
    ) -> None:
        await st.feed({"request_id": "huge", "prompt": "x " * 450_000})
        [res] = st.answers("huge")
        assert res.status == "rejected" and res.error is not None
        assert (res.error.code, res.error.field) == ("limit_exceeded", "prompt")
        assert st.runner.tokenised_on == set()  # refused before the tokenizer saw it
        await st.feed({"request_id": "small", "prompt": "a fox"})
        assert st.runner.tokenised_on and threading.get_ident() not in st.runner.tokenised_on


class TestKafkaOutageWorker:
    async def test_a_worker_cut_off_kafka_stays_up_and_sigterm_still_exits_0(
        self, stack: Any, package_tmp: Path, tmp_path: Path
    ) -> None:
        flag = tmp_path / "kafka-down"
        async with pool_of(stack, package_tmp, "kdown") as pool:
            worker = await pool.spawn(faults=f"kafka_down={flag}")
            flag.touch()
            async with pool.client() as client:
                reqs = [request(f"a storm at sea {i}", seed=900 + i) for i in range(4)]
                ids = await client.submit(reqs)
                await wait_for_log(worker, "dependency down: not ready, fetching paused, "
                                   "retrying with backoff", within=90, dependency="kafka")
                status, body = await asyncio.to_thread(worker.get, "/readyz")
                assert status == 503 and json.loads(body)["reasons"] == ["kafka unavailable"]
                await until(lambda: worker.metric("imagegen_paused_tier") == len(TIERS),
                            within=10, what="every tier's partitions paused")
                assert worker.proc.poll() is None  # not fatal: the model stays loaded
                worker.proc.send_signal(signal.SIGTERM)
                # Within the default grace period, though nothing can be published.
                code = await asyncio.to_thread(worker.proc.wait, 30)
                assert code == 0, worker.tail()
                assert not client.results
                flag.unlink()
                await pool.spawn()
                results = await client.wait(ids, within=120)
            assert set(results) == set(ids)
            assert all(r.status == "succeeded" for r in results.values())
            assert await pool.wait_lag_zero() == 0
