"""The worker's stages in-process, for tests that watch the request path call by call.

Wired by `imagegen_worker.wiring.build_stages` — the composition root the worker itself uses —
on the real Redis (job records with their Lua scripts, cache), Kafka (result and dead-letter
producer) and MinIO (uploads, presigned URLs). Only the model is a stand-in: a runner drawing
solid-colour images that raises on prompts containing POISON, so batching, retries and the dead
letter are visible call by call. Offsets "acknowledged" are recorded in `released`.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from imagegen_api.messages import DeadLetter, GenerationResult
from imagegen_worker import wiring
from imagegen_worker.dispatch import enqueue
from imagegen_worker.faults import Faults
from imagegen_worker.metrics import WorkerMetrics
from imagegen_worker.results import ResultPublisher
from imagegen_worker.server import Health
from imagegen_worker.stats import WorkerStats
from imagegen_worker.storage import ObjectStore
from imagegen_worker.work import MessageRef, Work

from tests.integration.worker.harness import NAMESPACE, Pool, make_pool


class ColourRunner:
    name = "tiny"
    device = "cpu"

    def __init__(self) -> None:
        self.revision = f"rev-{uuid.uuid4().hex[:8]}"  # fresh cache keys on every run
        self.calls: list[int] = []
        self.tokenised_on: set[int] = set()  # thread ids that counted tokens

    def count_tokens(self, prompt: str) -> int:
        self.tokenised_on.add(threading.get_ident())
        return len(prompt.split())

    def prompt_window(self) -> int:
        return 77  # a CLIP text encoder's window, as the SDXL runner's

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
    faults: Faults = field(default_factory=Faults)
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    runner: ColourRunner = field(default_factory=ColourRunner)
    released: list[str] = field(default_factory=list)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    health: Health = field(default_factory=Health)

    def __post_init__(self) -> None:
        config = self.pool.config
        self.topic = config.kafka.tier_topics["fast"]
        self._offsets = itertools.count()
        self.scheduler = wiring.build_scheduler(config)
        self.stages = wiring.build_stages(
            config, worker="w-0", runners={"tiny": self.runner}, redis=self.redis,
            redis_cache=self.redis, publisher=self.publisher, store=self.store,
            ack=lambda ref: self.released.append(ref.source), requeue=self.scheduler.requeue,
            health=self.health, metrics=self.metrics, stats=WorkerStats(), faults=self.faults)
        self.records = self.stages.records
        self.intake = self.stages.intake
        self.batches = self.stages.batches
        self.outages = self.stages.outages

    def rid(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def src(self, offset: int) -> str:
        return f"{self.topic}:0:{offset}"

    def ref(self, body: dict[str, Any], offset: int | None = None) -> MessageRef:
        body = {**body, "request_id": self.rid(body["request_id"])}
        off = next(self._offsets) if offset is None else offset
        return MessageRef(self.topic, 0, off, body["request_id"].encode(),
                          json.dumps(body).encode())

    def raw_ref(self, value: bytes, key: bytes | None = None) -> MessageRef:
        return MessageRef(self.topic, 0, next(self._offsets), key, value)

    async def feed(self, *bodies: dict[str, Any]) -> list[Work]:
        works = []
        for body in bodies:
            work = await self.intake.handle(self.ref(body))
            if work is not None:
                enqueue(self.scheduler, work)
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
        raw = await self.redis.hgetall(self.records.key(self.rid(name)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def fetch(self, url: str) -> bytes:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            resp.raise_for_status()
            return await resp.read()


@dataclass
class StagesEnv:
    pool: Pool
    redis: aioredis.Redis
    publisher: RecordingPublisher
    store: ObjectStore

    def stages(self, **kw: Any) -> Stages:
        return Stages(self.pool, self.redis, self.publisher, kw.pop("store", self.store), **kw)


@pytest.fixture(scope="package")
async def stages_env(stack: Any, package_tmp: Path) -> AsyncIterator[StagesEnv]:
    pool = await make_pool(stack, package_tmp, "stages")
    kafka = pool.config.kafka
    publisher = RecordingPublisher(stack.kafka_bootstrap, results_topic=kafka.results_topic,
                                   dlq_topic=kafka.dlq_topic, client_id="stages")
    await publisher.start()
    store = ObjectStore(pool.config.storage.model_copy(update={"endpoint": stack.s3_endpoint}),
                        NAMESPACE, pool.name)
    await store.ensure_bucket()
    client = wiring.records_client(stack.redis_url)
    try:
        yield StagesEnv(pool, client, publisher, store)
    finally:
        await publisher.stop()
        await client.aclose()


@pytest.fixture
def st(stages_env: StagesEnv) -> Stages:
    return stages_env.stages()
