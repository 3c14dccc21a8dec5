"""The worker against the real local stack (Kafka, Redis, MinIO): real `imagegen-worker run`
subprocesses serving builtin://tiny-sdxl on the CPU (64x64, 2 steps), driven through the client.

Each test group gets its own pool name (its own topics, group, keys), so runs never see each
other's messages. Behaviours asserted: every request answered exactly once across tiers; tier
weights under a backlog; cache hits without generation; every rejection class answered and its
offset committed; dead letter after max attempts; SIGKILL mid-batch loses nothing; SIGTERM drains
(exit 0, the batch in hand published and committed); POST /drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from imagegen_api import naming
from imagegen_api.messages import DeadLetter, GenerationRequest, GenerationResult, Heartbeat
from imagegen_api.specs import (
    DEFAULT_TIER_SPECS,
    BatchingSpec,
    GenerationDefaults,
    ImageModelSpec,
    ModelLimits,
    SafetySpec,
)
from imagegen_api.workerconfig import (
    CacheSettings,
    KafkaSettings,
    ModelEntry,
    StorageSettings,
    WorkerConfig,
)
from imagegen_client import ImagegenClient, new_request_id
from imagegen_worker.batchrun import BatchRunner
from imagegen_worker.cache import CachedImage, ImageCache
from imagegen_worker.faults import Faults
from imagegen_worker.intake import Intake
from imagegen_worker.metrics import WorkerMetrics
from imagegen_worker.respond import Responder
from imagegen_worker.results import JobRecords, ResultPublisher
from imagegen_worker.scheduler import TierScheduler
from imagegen_worker.stats import WorkerStats
from imagegen_worker.storage import ObjectStore
from imagegen_worker.work import MessageRef, Work
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

pytestmark = pytest.mark.integration

NAMESPACE = "itest"
PARTITIONS = 3
READY_TIMEOUT = 180.0
TIERS = ("turbo", "fast", "relax")


# --- harness ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_config(stack: Any, pool: str, *, batch: int = 4, max_attempts: int = 3,
                  bucket: str) -> WorkerConfig:
    tiers = list(DEFAULT_TIER_SPECS)
    spec = ImageModelSpec(
        source="builtin://tiny-sdxl", pipeline="sdxl", dtype="float32",
        defaults=GenerationDefaults(width=64, height=64, steps=2, guidance=5.0,
                                    sampler="euler"),
        limits=ModelLimits(max_pixels=128 * 128, max_steps=4, max_prompt_tokens=20,
                           max_images_per_request=2),
    )
    return WorkerConfig(
        namespace=NAMESPACE,
        pool=pool,
        models=[ModelEntry(name="tiny", spec=spec)],
        kafka=KafkaSettings(
            bootstrap_servers=None,  # from IMAGEGEN_KAFKA_BOOTSTRAP, as in a pod
            group=naming.consumer_group(NAMESPACE, pool),
            tier_topics={t.name: naming.tier_topic(NAMESPACE, pool, t.name) for t in tiers},
            results_topic=naming.results_topic(NAMESPACE, pool),
            dlq_topic=naming.dlq_topic(NAMESPACE, pool),
            tiers=tiers,
            max_attempts=max_attempts,
            max_poll_interval_ms=120_000,
        ),
        batching=BatchingSpec(max_batch_size=batch, max_wait_ms=20),
        cache=CacheSettings(ttl_seconds=600),
        storage=StorageSettings(bucket=bucket, url_ttl_seconds=600),
        safety=SafetySpec(blocklist=["forbidden phrase"]),
        heartbeat_seconds=1,
        job_ttl_seconds=3600,
    )


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, path: str) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` matching `labels` on /metrics."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            series, _, value = line.rpartition(" ")
            base, _, lab = series.partition("{")
            if base != name:
                continue
            if all(f'{k}="{v}"' in lab for k, v in labels.items()):
                total += float(value)
        return total

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


@dataclass
class Pool:
    """One pool's topics and config, and the worker processes serving it."""

    stack: Any
    name: str
    config_path: Path
    config: WorkerConfig
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, *, faults: str = "", name: str | None = None) -> Worker:
        name = name or f"{self.name}-w{len(self.workers)}"
        port = free_port()
        log_path = self.tmp / f"{name}.log"
        env = {
            **os.environ,
            naming.ENV_WORKER_CONFIG: str(self.config_path),
            naming.ENV_HTTP_PORT: str(port),
            naming.ENV_POD_NAME: name,
            naming.ENV_POD_NAMESPACE: NAMESPACE,
            naming.ENV_ROLE: "warm",
            naming.ENV_KAFKA_BOOTSTRAP: self.stack.kafka_bootstrap,
            naming.ENV_REDIS_URL: self.stack.redis_url,
            naming.ENV_S3_ENDPOINT: self.stack.s3_endpoint,
            naming.ENV_MODEL_CACHE: str(self.tmp / "models"),
            "AWS_ACCESS_KEY_ID": self.stack.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.stack.s3_secret_key,
            "IMAGEGEN_DEVICE": "cpu",
            "IMAGEGEN_FAULT_INJECT": faults,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        exe = Path(sys.executable).with_name("imagegen-worker")
        proc = subprocess.Popen([str(exe), "run"], env=env, stdout=log_path.open("wb"),
                                stderr=subprocess.STDOUT)
        worker = Worker(name, proc, port, log_path)
        self.workers.append(worker)
        return worker

    async def ready(self, worker: Worker, within: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if worker.proc.poll() is not None:
                pytest.fail(f"worker {worker.name} exited with {worker.proc.returncode}:\n"
                            f"{worker.tail()}")
            with contextlib.suppress(OSError):
                status, _ = await asyncio.to_thread(worker.get, "/readyz")
                if status == 200:
                    return
            await asyncio.sleep(0.3)
        pytest.fail(f"worker {worker.name} not ready after {within}s:\n{worker.tail()}")

    async def spawn(self, *, faults: str = "") -> Worker:
        worker = self.start_worker(faults=faults)
        await self.ready(worker)
        return worker

    def stop_all(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()

    def client(self) -> ImagegenClient:
        return ImagegenClient(self.stack.kafka_bootstrap, NAMESPACE, self.name,
                              redis_url=self.stack.redis_url)

    async def lag(self) -> int:
        """Σ (end offset - committed offset) over the tier partitions of the pool's group."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.kafka_bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.stack.kafka_bootstrap)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.config.kafka.group)
            tps = [TopicPartition(t, p) for t in self.config.kafka.tier_topics.values()
                   for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(tps)
            total = 0
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                total += ends[tp] - done
            return total
        finally:
            await consumer.stop()
            await admin.close()

    async def wait_lag_zero(self, within: float = 30.0) -> int:
        deadline = time.monotonic() + within
        lag = await self.lag()
        while lag and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            lag = await self.lag()
        return lag

    async def dead_letters(self) -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.stack.kafka_bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(self.config.kafka.dlq_topic, 0)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            await consumer.seek_to_beginning(tp)
            out: list[dict[str, Any]] = []
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                out.extend(json.loads(m.value) for m in batch.get(tp, []) if m.value)
            return out
        finally:
            await consumer.stop()


async def make_pool(stack: Any, tmp: Path, label: str, **config_kw: Any) -> Pool:
    name = f"{label}-{uuid.uuid4().hex[:6]}"
    bucket = f"itest-{uuid.uuid4().hex[:8]}"  # created by the worker when missing
    config = worker_config(stack, name, bucket=bucket, **config_kw)
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        topics = [NewTopic(t, PARTITIONS, 1) for t in config.kafka.tier_topics.values()]
        topics += [NewTopic(config.kafka.results_topic, PARTITIONS, 1),
                   NewTopic(config.kafka.dlq_topic, 1, 1)]
        await admin.create_topics(topics)
    finally:
        await admin.close()
    path = tmp / f"{name}.json"
    await asyncio.to_thread(path.write_text, config.dump_json())
    return Pool(stack, name, path, config, tmp)


@contextlib.asynccontextmanager
async def pool_of(stack: Any, tmp: Path, label: str, **config_kw: Any) -> AsyncIterator[Pool]:
    pool = await make_pool(stack, tmp, label, **config_kw)
    try:
        yield pool
    finally:
        await asyncio.to_thread(pool.stop_all)


# Redis outlives a test run and the cache key does not name the pool: a negative prompt unique
# to this run keeps seeded requests from being answered by an earlier run's cache entries.
RUN = uuid.uuid4().hex[:8]


def request(prompt: str, *, tier: str = "fast", seed: int | None = None,
            **kw: Any) -> GenerationRequest:
    kw.setdefault("negative_prompt", f"run {RUN}")
    return GenerationRequest(request_id=new_request_id("it"), prompt=prompt, tier=tier,
                             seed=seed, **kw)


# --- one shared pool for the behaviours that do not need their own workers -------------------


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker")


@pytest.fixture(scope="module")
async def shared(stack: Any, module_tmp: Path) -> AsyncIterator[tuple[Pool, Worker]]:
    async with pool_of(stack, module_tmp, "shared") as pool:
        worker = await pool.spawn(faults="fail_prompt=POISON")
        yield pool, worker


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


class TestCache:
    async def test_repeat_is_answered_from_the_cache_without_generation(
        self, shared: tuple[Pool, Worker]
    ) -> None:
        pool, worker = shared
        first = request("a koi pond from above", seed=77, num_images=2)
        again = request("a koi pond from above", seed=77, num_images=2)
        async with pool.client() as client:
            r1 = (await client.generate([first], within=60))[first.request_id]
            batches = worker.metric("imagegen_batch_size_count")
            hits = worker.metric("imagegen_cache_hits_total")
            r2 = (await client.generate([again], within=60))[again.request_id]
        assert r1.status == r2.status == "succeeded"
        assert not r1.cache_hit and r2.cache_hit
        assert r2.timings.generate_ms == 0 and r2.timings.upload_ms == 0
        assert [i.key for i in r2.images] == [i.key for i in r1.images]
        assert [i.sha256 for i in r2.images] == [i.sha256 for i in r1.images]
        assert worker.metric("imagegen_batch_size_count") == batches  # no pipeline call
        assert worker.metric("imagegen_cache_hits_total") == hits + 1

    async def test_reused_request_id_gets_the_recorded_result(
        self, shared: tuple[Pool, Worker]
    ) -> None:
        pool, worker = shared
        req = request("a violin made of ice")
        async with pool.client() as client:
            r1 = (await client.generate([req], within=60))[req.request_id]
        batches = worker.metric("imagegen_batch_size_count")
        async with pool.client() as client:  # a new client: it only sees new messages
            r2 = (await client.generate([req], within=60))[req.request_id]
        assert r2.images[0].key == r1.images[0].key and r2.images[0].seed == r1.images[0].seed
        assert worker.metric("imagegen_batch_size_count") == batches
        assert worker.metric("imagegen_duplicates_total", action="replayed") >= 1


REJECTIONS: list[tuple[dict[str, Any], str, str, str | None]] = [
    ({"width": 100}, "rejected", "invalid_field", "width"),
    ({"height": 32}, "rejected", "invalid_field", "height"),
    ({"width": 256, "height": 256}, "rejected", "limit_exceeded", "width,height"),
    ({"steps": 9}, "rejected", "limit_exceeded", "steps"),
    ({"num_images": 3}, "rejected", "limit_exceeded", "num_images"),
    ({"prompt": "word " * 30}, "rejected", "limit_exceeded", "prompt"),
    ({"sampler": "heun"}, "rejected", "invalid_field", "sampler"),
    ({"output_format": "gif"}, "rejected", "invalid_field", "output_format"),
    ({"tier": "ultra"}, "rejected", "unknown_tier", "tier"),
    ({"model": "sd99"}, "rejected", "unknown_model", "model"),
    ({"guidance": 80}, "rejected", "invalid_field", "guidance"),
    ({"seed": -4}, "rejected", "invalid_field", "seed"),
    ({"deadline": 1.0}, "expired", "deadline_exceeded", "deadline"),
    ({"prompt": "a Forbidden  Phrase here"}, "blocked", "blocked", "prompt"),
]


class TestRejections:
    async def test_every_rejection_class_is_answered_and_committed(
        self, shared: tuple[Pool, Worker]
    ) -> None:
        pool, worker = shared
        bodies: dict[str, tuple[str, str, str | None]] = {}
        async with pool.client() as client:
            for overrides, status, code, fld in REJECTIONS:
                rid = new_request_id("rej")
                body = {"request_id": rid, "prompt": "a fox", **overrides}
                bodies[rid] = (status, code, fld)
                await client.submit_raw("fast", json.dumps(body).encode(), rid.encode())
            await client.submit_raw("relax", b"{not json", f"rej-badjson-{RUN}".encode())
            await client.submit_raw("turbo", json.dumps({"prompt": "no id"}).encode(),
                                    f"rej-noid-{RUN}".encode())
            noprompt = f"rej-noprompt-{RUN}"
            await client.submit_raw("fast", json.dumps({"request_id": noprompt}).encode(),
                                    noprompt.encode())
            bodies[f"rej-badjson-{RUN}"] = ("rejected", "invalid_json", None)
            bodies[f"rej-noid-{RUN}"] = ("rejected", "missing_field", "request_id")
            bodies[f"rej-noprompt-{RUN}"] = ("rejected", "missing_field", "prompt")
            results = await client.wait(bodies, within=60)
        assert set(results) == set(bodies)
        for rid, (status, code, fld) in bodies.items():
            res = results[rid]
            assert res.error is not None, rid
            assert (res.status, res.error.code, res.error.field) == (status, code, fld), res
            assert res.error.limit, res
            assert not res.images
        assert await pool.wait_lag_zero() == 0
        assert worker.metric("imagegen_requests_total", status="rejected") >= 14


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


# --- behaviours that need their own workers ---------------------------------------------------


class TestTierWeights:
    async def test_backlog_is_served_by_weight(self, stack: Any, module_tmp: Path) -> None:
        per_tier = 30
        async with pool_of(stack, module_tmp, "weights", batch=1) as pool:
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


class TestCrashAndDrain:
    async def test_sigkill_mid_batch_loses_nothing(self, stack: Any, module_tmp: Path) -> None:
        async with pool_of(stack, module_tmp, "kill", batch=4) as pool:
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
        self, stack: Any, module_tmp: Path
    ) -> None:
        async with pool_of(stack, module_tmp, "term", batch=4) as pool:
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

    async def test_post_drain_stops_serving_but_keeps_the_process(
        self, stack: Any, module_tmp: Path
    ) -> None:
        async with pool_of(stack, module_tmp, "drain") as pool:
            worker = await pool.spawn()
            status, body = await asyncio.to_thread(worker.post, "/drain")
            assert status == 202 and json.loads(body)["draining"]
            deadline = time.monotonic() + 30
            while not json.loads((await asyncio.to_thread(worker.get, "/drain"))[1])["drained"]:
                assert time.monotonic() < deadline, worker.tail()
                await asyncio.sleep(0.2)
            assert (await asyncio.to_thread(worker.get, "/readyz"))[0] == 503
            assert (await asyncio.to_thread(worker.get, "/healthz"))[0] == 200
            assert (await asyncio.to_thread(worker.get, "/livez"))[0] == 200
            assert worker.proc.poll() is None
            worker.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.proc.wait, 30) == 0


async def wait_for_log(worker: Worker, msg: str, *, within: float, **match: Any) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for rec in worker.log_lines():
            if rec.get("msg") == msg and all(rec.get(k) == v for k, v in match.items()):
                return
        await asyncio.sleep(0.2)
    pytest.fail(f"no log line {msg!r} {match} from {worker.name}:\n{worker.tail()}")


async def wait_running(client: ImagegenClient, ids: list[str], *, within: float) -> str:
    """A request id whose job record says a worker is generating it now."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for rid in ids:
            record = await client.status(rid)
            if record is not None and record.state == "running":
                return rid
        await asyncio.sleep(0.1)
    pytest.fail("no request reached state running")


# --- the request path in-process: intake → scheduler → batch runner → answers ----------------
#
# The worker's stages wired as `app` wires them, on the real Redis (job records with their Lua
# scripts, cache), Kafka (result and dead-letter producer) and MinIO (uploads, presigned URLs).
# Only the model is a stand-in: a runner drawing solid-colour images that raises on prompts
# containing POISON, so batching, retries and the dead letter are visible call by call.


class ColourRunner:
    name = "tiny"
    device = "cpu"

    def __init__(self) -> None:
        self.revision = f"rev-{uuid.uuid4().hex[:8]}"  # fresh cache keys on every run
        self.calls: list[int] = []

    def count_tokens(self, prompt: str) -> int:
        return len(prompt.split())

    def generate(self, jobs: list[Any]) -> list[Any]:
        from PIL import Image

        self.calls.append(len(jobs))
        if any("POISON" in j.prompt for j in jobs):
            raise RuntimeError("NaNs everywhere")
        return [Image.new("RGB", (j.width, j.height), (j.seed % 256, 0, 0)) for j in jobs]

    def warmup(self) -> None:
        return None


class RecordingPublisher(ResultPublisher):
    """The real producer (acks=all), remembering what it got acknowledged."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.results: list[GenerationResult] = []
        self.letters: list[DeadLetter] = []

    async def publish(self, result: GenerationResult) -> None:
        await super().publish(result)
        self.results.append(result)

    async def dead_letter(self, letter: DeadLetter) -> None:
        await super().dead_letter(letter)
        self.letters.append(letter)


@dataclass
class Stages:
    pool: Pool
    redis: aioredis.Redis
    publisher: RecordingPublisher
    store: ObjectStore
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    runner: ColourRunner = field(default_factory=ColourRunner)
    released: list[str] = field(default_factory=list)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)

    def __post_init__(self) -> None:
        config = self.pool.config
        self.topic = config.kafka.tier_topics["fast"]
        self._offsets = itertools.count()
        self.scheduler: TierScheduler[Work] = TierScheduler(
            config.kafka.tiers, max_batch_size=4, max_wait_ms=0)
        self.records = JobRecords(self.redis, ttl_seconds=600, worker="w-0")
        self.cache = ImageCache(self.redis, ttl_seconds=600, metrics=self.metrics)
        runners = {"tiny": self.runner}
        self.responder = Responder(
            records=self.records, publisher=self.publisher, store=self.store,
            done=lambda ref: self.released.append(ref.source), metrics=self.metrics,
            stats=WorkerStats(), worker="w-0")
        self.intake = Intake(config=config, runners=runners,
                             tier_of={t: n for n, t in config.kafka.tier_topics.items()},
                             records=self.records, cache=self.cache, responder=self.responder,
                             metrics=self.metrics, worker="w-0")
        self.batches = BatchRunner(
            config=config, runners=runners, records=self.records, cache=self.cache,
            store=self.store, responder=self.responder, intake=self.intake,
            metrics=self.metrics, stats=WorkerStats(), faults=Faults(),
            requeue=self.scheduler.requeue)

    def rid(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def src(self, offset: int) -> str:
        return f"{self.topic}:0:{offset}"

    def ref(self, body: dict[str, Any], offset: int | None = None) -> MessageRef:
        body = {**body, "request_id": self.rid(body["request_id"])}
        off = next(self._offsets) if offset is None else offset
        return MessageRef(self.topic, 0, off, body["request_id"].encode(),
                          json.dumps(body).encode())

    async def feed(self, *bodies: dict[str, Any]) -> list[Work]:
        works = []
        for body in bodies:
            work = await self.intake.handle(self.ref(body))
            if work is not None:
                self.scheduler.push(work, tier=work.tier, key=work.compat_key,
                                    size=work.request.num_images)
                works.append(work)
        return works

    async def run_all(self) -> None:
        while (batch := self.scheduler.next_batch(flush=True)) is not None:
            generated = await self.batches.generate(batch)
            if generated is not None:
                await self.batches.deliver(generated)

    def answers(self, name: str) -> list[GenerationResult]:
        return [r for r in self.publisher.results if r.request_id == self.rid(name)]

    async def record(self, name: str) -> dict[str, str]:
        raw = await self.redis.hgetall(naming.job_key(self.rid(name)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def fetch(self, url: str) -> bytes:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            resp.raise_for_status()
            return await resp.read()


@pytest.fixture(scope="module")
async def stages_env(stack: Any, module_tmp: Path
                     ) -> AsyncIterator[tuple[Pool, aioredis.Redis, RecordingPublisher,
                                              ObjectStore]]:
    pool = await make_pool(stack, module_tmp, "stages")
    kafka = pool.config.kafka
    publisher = RecordingPublisher(stack.kafka_bootstrap, results_topic=kafka.results_topic,
                                   dlq_topic=kafka.dlq_topic, client_id="stages")
    await publisher.start()
    store = ObjectStore(pool.config.storage.model_copy(update={"endpoint": stack.s3_endpoint}),
                        NAMESPACE, pool.name)
    await store.ensure_bucket()
    client = aioredis.from_url(stack.redis_url)
    try:
        yield pool, client, publisher, store
    finally:
        await publisher.stop()
        await client.aclose()


@pytest.fixture
def st(stages_env: tuple[Pool, aioredis.Redis, RecordingPublisher, ObjectStore]) -> Stages:
    pool, client, publisher, store = stages_env
    return Stages(pool, client, publisher, store)


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
        await st.redis.hset(naming.job_key(st.rid("crashy")),
                            mapping={"request_id": st.rid("crashy"), "state": "running",
                                     "attempts": "3"})
        await st.redis.expire(naming.job_key(st.rid("crashy")), 600)
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


# --- the cache breaker against a Redis server that goes away and comes back ------------------


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def start_redis(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"redis-server did not start on port {port}")


class TestCacheBreaker:
    async def test_redis_down_degrades_then_recovers(self, tmp_path: Path) -> None:
        port = free_port()
        server = start_redis(port, tmp_path)
        # The client as `app` builds it for the cache: short timeouts, no retries.
        client = aioredis.from_url(f"redis://127.0.0.1:{port}", socket_connect_timeout=0.5,
                                   socket_timeout=1, retry=Retry(NoBackoff(), 0))
        clock, metrics = ManualClock(), WorkerMetrics()
        cache = ImageCache(client, ttl_seconds=60, metrics=metrics, retry_after=5, clock=clock)
        entry = CachedImage(key="ns/p/x.png", sha256="x", size=10, seed=1, width=64,
                            height=64, format="png")
        try:
            assert await cache.get_many(["a", "b"]) == [None, None]
            assert await cache.put_many([("a", entry)])
            assert await cache.get_many(["a", "b"]) == [entry, None]
            assert await client.ttl(naming.cache_key("a")) > 0
            await client.set(naming.cache_key("broken"), "{broken")
            assert await cache.get_many(["broken"]) == [None]  # unreadable: a miss

            server.terminate()
            server.wait(10)
            assert await cache.get_many(["a"]) is None  # unavailable, not an error
            assert metrics.cache_errors._value.get() == 1  # type: ignore[attr-defined]
            # Breaker open: Redis is not asked again (asking would count another error).
            assert await cache.get_many(["a"]) is None
            assert not await cache.put_many([("a", entry)])
            assert metrics.cache_errors._value.get() == 1  # type: ignore[attr-defined]

            server = start_redis(port, tmp_path)  # back, empty
            clock.now += 5
            assert await cache.get_many(["a"]) == [None]
            assert await cache.put_many([("a", entry)])
            assert await cache.get_many(["a"]) == [entry]
            assert metrics.cache_errors._value.get() == 1  # type: ignore[attr-defined]
        finally:
            await client.aclose()
            server.kill()
            server.wait()


# --- s3:// model sources: the cases tests/integration/test_model_sources.py leaves out ---------


class TestModelSourcesS3:
    @pytest.fixture
    def s3c(self, stack: Any) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id=stack.s3_access_key,
                            aws_secret_access_key=stack.s3_secret_key,
                            config=Config(s3={"addressing_style": "path"}))

    def test_source_naming_one_object_resolves_to_that_file(
        self, s3c: Any, s3_bucket: str, tmp_path: Path
    ) -> None:
        from imagegen_worker.pipelines import s3, sources

        s3c.put_object(Bucket=s3_bucket, Key="loras/style.safetensors", Body=b"lora")
        s3c.put_object(Bucket=s3_bucket, Key="loras/other.safetensors", Body=b"other")
        src = sources.parse_source(f"s3://{s3_bucket}/loras/style.safetensors")
        weights = s3.fetch(src, tmp_path, s3=s3c)
        assert weights.path is not None and weights.path.name == "style.safetensors"
        assert weights.path.read_bytes() == b"lora" and weights.downloaded_files == 1
        again = s3.fetch(src, tmp_path, s3=s3c)
        assert again.path == weights.path and again.downloaded_files == 0

    def test_interrupted_download_leaves_nothing_that_looks_complete(
        self, s3c: Any, s3_bucket: str, tmp_path: Path
    ) -> None:
        from imagegen_worker.pipelines import s3, sources

        for name in "abc":
            s3c.put_object(Bucket=s3_bucket, Key=f"m/{name}", Body=name.encode())

        class CutAfterOne:  # the real client; the connection "drops" after one file
            def __init__(self) -> None:
                self.calls = 0

            def download_file(self, *args: Any, **kw: Any) -> None:
                self.calls += 1
                if self.calls > 1:
                    raise ConnectionResetError("connection dropped")
                s3c.download_file(*args, **kw)

            def __getattr__(self, name: str) -> Any:
                return getattr(s3c, name)

        src = sources.parse_source(f"s3://{s3_bucket}/m")
        with pytest.raises(ConnectionResetError):
            s3.fetch(src, tmp_path, s3=CutAfterOne())
        assert list((tmp_path / "s3" / s3_bucket / "m").iterdir()) == []
        done = s3.fetch(src, tmp_path, s3=s3c)
        assert done.downloaded_files == 3 and done.path is not None
        assert sorted(p.name for p in done.path.iterdir() if not p.name.startswith(".")) == [
            "a", "b", "c"]

    @pytest.fixture
    def weights(self, s3c: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Any:
        """A bucket with a model folder and a LoRA file; s3.client() is the real client."""
        from imagegen_worker.pipelines import s3

        s3c.put_object(Bucket=s3_bucket, Key="sdxl/model_index.json", Body=b"{}")
        s3c.put_object(Bucket=s3_bucket, Key="sdxl/unet/diffusion_pytorch_model.safetensors",
                       Body=b"w" * 4096)
        s3c.put_object(Bucket=s3_bucket, Key="loras/style.safetensors", Body=b"lora")
        monkeypatch.setattr(s3, "client", lambda: s3c)
        return s3_bucket

    @staticmethod
    def marker(dest: Path, name: str) -> dict[str, Any]:
        return dict(json.loads((dest / ".imagegen-prefetch" / f"{name}.json").read_text()))

    def test_prefetch_downloads_an_s3_model_once_with_progress(
        self, weights: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from imagegen_worker import prefetch
        from imagegen_worker.pipelines import sources

        src = f"s3://{weights}/sdxl"
        argv = ["prefetch", "--model", "sdxl", "--source", src, "--dest", str(tmp_path)]
        assert prefetch.main(argv) == 0
        out = capsys.readouterr().out
        assert f"[1/2] {src}/model_index.json" in out and "2 files downloaded" in out
        first = self.marker(tmp_path, "sdxl")
        assert first["revision"].startswith("s3:")
        assert Path(first["path"], "unet", "diffusion_pytorch_model.safetensors").is_file()
        assert sources.resolve(src, cache_dir=tmp_path).downloaded_files == 0
        assert prefetch.main(argv) == 0
        assert "0 files downloaded" in capsys.readouterr().out
        assert self.marker(tmp_path, "sdxl")["revision"] == first["revision"]

    def test_prefetch_model_config_brings_its_loras(self, weights: str, tmp_path: Path) -> None:
        from imagegen_worker import prefetch

        config = {
            "source": f"s3://{weights}/sdxl",
            "dtype": "float16",
            "loras": [{"name": "style", "source": f"s3://{weights}/loras/style.safetensors"}],
        }
        entry = json.dumps({"name": "sdxl-style", "spec": config})
        assert prefetch.main(["--model-config", entry, "--dest", str(tmp_path)]) == 0
        got = self.marker(tmp_path, "sdxl-style")
        assert set(got["loras"]) == {"style"}
        assert got["loras"]["style"]["revision"].startswith("s3:")
        config_file = tmp_path / "model.json"
        config_file.write_text(json.dumps(config))
        assert prefetch.main(["--model", "m", "--model-config", f"@{config_file}",
                              "--dest", str(tmp_path)]) == 0
        assert self.marker(tmp_path, "m")["revision"] == got["revision"]
