"""A small asyncio client of a generation pool: produce requests, wait for their results, read
job records, download images. Used by the `imagegen` CLI, the integration tests, the demo and
the benchmark. Part of the base install: needs only the contract, aiokafka, redis and aiohttp.

Results are read from the pool's results topic without a consumer group: the client assigns
itself every partition at the end offsets taken *before* it produces anything, so it sees every
answer to its requests and nothing older. The topic may carry a request id twice (a worker that
died after publishing and before committing; a client re-submitting an id): the client keeps the
first result per request id and counts the rest in `duplicates`. The job record in Redis is the
source of truth (`status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import cast

import aiohttp
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from imagegen_api import naming
from imagegen_api.messages import GenerationRequest, GenerationResult, JobRecord
from imagegen_api.workerconfig import JobStoreSettings

DEFAULT_TIER = "fast"
Progress = Callable[[dict[str, GenerationResult]], None]


async def _wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` pass. asyncio.timeout, not wait_for: on Python
    3.11 wait_for can swallow a cancellation that arrives while the event is being set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def new_request_id(prefix: str = "req") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class ImagegenClient:
    def __init__(self, bootstrap: str, namespace: str, pool: str, *,
                 redis_url: str | None = None, client_id: str | None = None,
                 jobs_redis_url: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.namespace = namespace
        self.pool = pool
        self.redis_url = redis_url
        self.jobs_redis_url = jobs_redis_url  # None: where the workers put them by default
        self.client_id = client_id or new_request_id("imagegen-client")
        self.results_topic = naming.results_topic(namespace, pool)
        self.results: dict[str, GenerationResult] = {}  # first result per request id
        self.received_at: dict[str, float] = {}  # monotonic arrival of that first result
        self.duplicates: Counter[str] = Counter()  # later messages per request id
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._redis: aioredis.Redis | None = None

    async def __aenter__(self) -> ImagegenClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, and start reading results from the current end of the results topic."""
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap,
                                          client_id=self.client_id, acks="all",
                                          enable_idempotence=True, linger_ms=1)
        await self._producer.start()
        partitions = await self._producer.partitions_for(self.results_topic)
        tps = [TopicPartition(self.results_topic, p) for p in sorted(partitions)]
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                          client_id=self.client_id, group_id=None,
                                          enable_auto_commit=False, fetch_max_wait_ms=50)
        await self._consumer.start()
        self._consumer.assign(tps)
        ends = await self._consumer.end_offsets(tps)
        for tp in tps:
            self._consumer.seek(tp, ends[tp])
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for part in (self._consumer, self._producer):
            if part is not None:
                await part.stop()
        if self._redis is not None:
            await self._redis.aclose()

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for msgs in batches.values():
                for msg in msgs:
                    if msg.value is None:
                        continue
                    result = GenerationResult.from_bytes(msg.value)
                    if result.request_id in self.results:
                        self.duplicates[result.request_id] += 1
                    else:
                        self.results[result.request_id] = result
                        self.received_at[result.request_id] = time.monotonic()
            if batches:
                self._changed.set()

    # --- requests ----------------------------------------------------------------------------

    async def submit(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Produce requests to their tier topics (acks=all); their ids, in order."""
        assert self._producer is not None, "start() first"
        futures = []
        for req in requests:
            topic = naming.tier_topic(self.namespace, self.pool, req.tier or DEFAULT_TIER)
            if req.submitted_at is None:
                req = req.model_copy(update={"submitted_at": time.time()})
            futures.append(await self._producer.send(topic, value=req.to_bytes(),
                                                     key=req.request_id.encode()))
        await asyncio.gather(*futures)
        return [r.request_id for r in requests]

    async def submit_raw(self, tier: str, value: bytes, key: bytes | None = None) -> None:
        """Produce arbitrary bytes to a tier topic (tests of the worker's validation)."""
        assert self._producer is not None, "start() first"
        await self._producer.send_and_wait(naming.tier_topic(self.namespace, self.pool, tier),
                                           value=value, key=key)

    async def wait(self, request_ids: Iterable[str], *, within: float,
                   progress: Progress | None = None) -> dict[str, GenerationResult]:
        """Results of `request_ids` (first per id) once all arrived or `within` s passed."""
        wanted = set(request_ids)
        deadline = time.monotonic() + within
        while True:
            got = {rid: self.results[rid] for rid in wanted if rid in self.results}
            if progress is not None:
                progress(got)
            remaining = deadline - time.monotonic()
            if len(got) == len(wanted) or remaining <= 0:
                return got
            self._changed.clear()
            await _wait_event(self._changed, min(remaining, 0.5))

    async def generate(self, requests: Sequence[GenerationRequest], *,
                       within: float = 300.0) -> dict[str, GenerationResult]:
        ids = await self.submit(requests)
        return await self.wait(ids, within=within)

    # --- records and images ------------------------------------------------------------------

    async def status(self, request_id: str) -> JobRecord | None:
        """The pool's job record of `request_id` (records are per pool: another pool's record
        of the same id is not this one's)."""
        if self.redis_url is None and self.jobs_redis_url is None:
            raise ValueError("a Redis URL is needed to read job records")
        if self._redis is None:
            self._redis = aioredis.from_url(jobs_url(self.redis_url, self.jobs_redis_url))
        raw = await self._redis.hgetall(naming.job_key(self.namespace, self.pool, request_id))
        return JobRecord.from_hash(cast(dict[bytes, bytes], raw)) if raw else None

    @staticmethod
    async def download(results: Iterable[GenerationResult], out_dir: Path) -> list[Path]:
        """Fetch every image through its presigned URL into `out_dir`."""
        await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
        paths: list[Path] = []
        async with aiohttp.ClientSession() as session:
            for result in results:
                for i, img in enumerate(result.images):
                    async with session.get(img.url) as resp:
                        resp.raise_for_status()
                        data = await resp.read()
                    path = out_dir / f"{result.request_id}-{i}.{img.format}"
                    await asyncio.to_thread(path.write_bytes, data)
                    paths.append(path)
        return paths


def jobs_url(redis_url: str | None, jobs_redis_url: str | None = None) -> str:
    """Where a pool's job records are: their own store when given, else the pool's Redis in the
    workers' default job database (workerconfig.JobStoreSettings)."""
    if jobs_redis_url:
        return jobs_redis_url
    if not redis_url:
        raise ValueError("a Redis URL is needed to read job records")
    return JobStoreSettings().url(redis_url)


async def read_status(redis_url: str | None, namespace: str, pool: str, request_id: str, *,
                      jobs_redis_url: str | None = None) -> JobRecord | None:
    """The job record of one request of one pool (no Kafka needed)."""
    client = aioredis.from_url(jobs_url(redis_url, jobs_redis_url))
    try:
        raw = await client.hgetall(naming.job_key(namespace, pool, request_id))
        return JobRecord.from_hash(cast(dict[bytes, bytes], raw)) if raw else None
    finally:
        await client.aclose()
