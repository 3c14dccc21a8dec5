"""Job records on the real Redis of the local stack (issue 17): per-pool keys, leases for
concurrent copies of one id, rejections that never override another message's answer, parked
copies answered from the record, and the topics' retention read from the real Kafka.

Each test uses ids of its own (a uuid prefix) in a pool name of its own, so runs never meet.
`Replays` stands for `delivery.Answers` (what a parked copy calls when it is answered); the
records themselves are the worker's own `JobRecords` on the real server.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from imagegen_api.messages import ErrorInfo, GenerationResult, ImageRef
from imagegen_worker import wiring
from imagegen_worker.leases import Parking
from imagegen_worker.results import LEASE_HELD, JobRecords, own_id, topic_retention_seconds
from imagegen_worker.scheduler import Entry
from imagegen_worker.validate import ValidRequest
from imagegen_worker.work import MessageRef, Work

pytestmark = pytest.mark.integration

TOPIC = "imagegen.itest.records.fast"


def src(offset: int) -> str:
    return f"{TOPIC}:0:{offset}"


def succeeded(rid: str, seed: int = 1) -> GenerationResult:
    image = ImageRef(key=f"itest/p/{'b' * 64}.png", url="http://x", width=64, height=64,
                     seed=seed, sha256="b" * 64, format="png")
    return GenerationResult(request_id=rid, status="succeeded", images=[image], tier="fast",
                            attempts=1, finished_at=time.time())


def rejected(rid: str) -> GenerationResult:
    return GenerationResult(request_id=rid, status="rejected", tier="fast",
                            error=ErrorInfo(code="invalid_json", message="not JSON",
                                            field=None, limit=None))


@pytest.fixture
async def redis(stack: Any) -> AsyncIterator[aioredis.Redis]:
    client = wiring.records_client(stack.redis_url)
    yield client
    await client.aclose()


def records(client: aioredis.Redis, pool: str = "p", **kw: Any) -> JobRecords:
    return JobRecords(client, namespace="itest", pool=pool, ttl_seconds=600, worker="w-0", **kw)


@pytest.fixture
def rid() -> str:
    return f"r-{uuid.uuid4().hex[:10]}"


class TestPools:
    async def test_the_same_id_in_two_pools_is_two_records(self, redis: aioredis.Redis,
                                                          rid: str) -> None:
        a, b = records(redis, "a"), records(redis, "b")
        await a.intake(rid, "fast")
        await a.start([rid], ["fast"], [src(1)])
        await a.finish(succeeded(rid), src(1))
        assert (await a.intake(rid, "fast")).terminal
        seen_by_b = await b.intake(rid, "fast")
        assert not seen_by_b.terminal and seen_by_b.result is None  # not A's answer replayed
        assert await b.start([rid], ["fast"], [src(1)]) == [1]  # B's own first attempt
        assert a.key(rid) != b.key(rid)


class TestLeases:
    async def test_a_second_copy_counts_no_attempt_while_the_first_runs(
        self, redis: aioredis.Redis, rid: str
    ) -> None:
        jobs = records(redis)
        assert await jobs.start([rid], ["fast"], [src(1)]) == [1]
        assert await jobs.start([rid], ["fast"], [src(2)]) == [LEASE_HELD]
        # both copies in one batch: the first takes the lease, the second is held
        other = f"{rid}-b"
        assert await jobs.start([other, other], ["fast", "relax"], [src(3), src(4)]) == [
            1, LEASE_HELD]
        assert (await jobs.get(rid)).attempts == 1  # type: ignore[union-attr]
        # the same message redelivered after a crash takes its own lease back at once
        assert await jobs.start([rid], ["fast"], [src(1)]) == [2]
        peek = await jobs.peek(rid, src(2))
        assert peek.held and peek.result is None
        winner = await jobs.finish(succeeded(rid), src(1))
        peek = await jobs.peek(rid, src(2))
        assert not peek.held and peek.result == winner

    async def test_a_copy_queued_before_the_answer_is_not_run_again(
        self, redis: aioredis.Redis, rid: str
    ) -> None:
        jobs = records(redis)
        # two copies queued while neither had started, run in successive batches
        assert not (await jobs.intake(rid, "fast")).terminal
        assert not (await jobs.intake(rid, "fast")).terminal
        assert await jobs.start([rid], ["fast"], [src(1)]) == [1]
        winner = await jobs.finish(succeeded(rid), src(1))
        assert await jobs.start([rid], ["fast"], [src(2)]) == [LEASE_HELD]  # parked, not run
        record = await jobs.get(rid)
        assert record is not None and record.state == "succeeded" and record.attempts == 1
        assert (await jobs.peek(rid, src(2))).result == winner

    async def test_a_lapsed_lease_lets_the_copy_run(self, redis: aioredis.Redis,
                                                    rid: str) -> None:
        jobs = records(redis, lease_seconds=0.2)
        assert await jobs.start([rid], ["fast"], [src(1)]) == [1]
        await asyncio.sleep(0.4)  # the holder died without an answer
        assert not (await jobs.peek(rid, src(2))).held
        assert await jobs.start([rid], ["fast"], [src(2)]) == [2]


class TestRejections:
    async def test_a_rejection_never_overrides_the_running_requests_answer(
        self, redis: aioredis.Redis, rid: str
    ) -> None:
        jobs = records(redis)
        await jobs.intake(rid, "fast")
        assert await jobs.start([rid], ["fast"], [src(1)]) == [1]
        # an unparseable message with the same key arrives while the valid one runs
        assert not (await jobs.intake(rid, "fast", queue=False)).terminal
        answered = await jobs.finish(rejected(rid), src(9))
        assert answered.status == "rejected" and answered.request_id == own_id(src(9))
        assert (await jobs.get(own_id(src(9)))).state == "rejected"  # type: ignore[union-attr]
        assert (await jobs.get(rid)).state == "running"  # type: ignore[union-attr]
        winner = await jobs.finish(succeeded(rid), src(1))
        assert winner.status == "succeeded" and winner.request_id == rid

    async def test_a_rejection_queued_behind_a_valid_copy_is_answered_apart(
        self, redis: aioredis.Redis, rid: str
    ) -> None:
        jobs = records(redis)
        await jobs.intake(rid, "fast")  # the valid message, queued, not started yet
        answered = await jobs.finish(rejected(rid), src(9))
        assert answered.request_id == own_id(src(9))
        assert (await jobs.get(rid)).state == "queued"  # type: ignore[union-attr]

    async def test_a_real_answer_replaces_a_recorded_rejection(self, redis: aioredis.Redis,
                                                               rid: str) -> None:
        jobs = records(redis)
        first = await jobs.finish(rejected(rid), src(1))  # the id was free: it takes it
        assert first.request_id == rid and (await jobs.intake(rid, "fast", queue=False)).terminal
        # its own redelivery gets the same rejection; a valid message is not answered by it
        assert (await jobs.finish(rejected(rid), src(1))).request_id == rid
        assert not (await jobs.intake(rid, "fast")).terminal
        assert await jobs.start([rid], ["fast"], [src(2)]) == [1]
        winner = await jobs.finish(succeeded(rid), src(2))
        assert winner.status == "succeeded"
        assert (await jobs.intake(rid, "fast")).result == winner


class Replays:
    """What the parked copy asks `delivery.Answers` to publish."""

    def __init__(self) -> None:
        self.got: list[tuple[str, GenerationResult]] = []

    async def replay(self, ref: MessageRef, stored: GenerationResult) -> None:
        self.got.append((ref.source, stored))


def entry(rid: str, offset: int) -> Entry[Work]:
    request = ValidRequest(request_id=rid, model="tiny", prompt="fox", negative_prompt="",
                           width=64, height=64, steps=2, guidance=5.0, sampler="euler",
                           seed=None, num_images=1, output_format="png", tier="fast",
                           submitted_at=None, deadline=None, webhook=None)
    ref = MessageRef(TOPIC, 0, offset, rid.encode(), b"{}")
    return Entry(Work(request=request, ref=ref, compat_key="k"), "fast", "k", 1, 0.0)


async def until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


class TestParking:
    async def test_a_parked_copy_is_answered_from_the_record(self, redis: aioredis.Redis,
                                                             rid: str) -> None:
        jobs, replays, requeued = records(redis), Replays(), []
        parking = Parking(records=jobs, answers=replays, requeue=requeued.append, poll_s=0.05)
        assert await jobs.start([rid], ["fast"], [src(1)]) == [1]
        parking.park(entry(rid, 2))
        await asyncio.sleep(0.3)
        assert replays.got == [] and requeued == [] and len(parking) == 1  # waiting
        winner = await jobs.finish(succeeded(rid, seed=77), src(1))
        await until(lambda: replays.got)
        assert replays.got == [(src(2), winner)] and requeued == []
        assert (await jobs.get(rid)).attempts == 1  # type: ignore[union-attr]

    async def test_a_parked_copy_runs_when_the_holder_goes_away(self, redis: aioredis.Redis,
                                                                rid: str) -> None:
        jobs, replays = records(redis, lease_seconds=0.3), Replays()
        requeued: list[Entry[Work]] = []
        parking = Parking(records=jobs, answers=replays, requeue=requeued.append, poll_s=0.05)
        assert await jobs.start([rid], ["fast"], [src(1)]) == [1]
        parked = entry(rid, 2)
        parking.park(parked)
        await until(lambda: requeued)
        assert requeued == [parked] and replays.got == []
        await parking.close()


class TestRetention:
    async def test_retention_is_read_from_the_broker(self, stack: Any) -> None:
        topics = [f"itest.retention.{uuid.uuid4().hex[:6]}.{i}" for i in range(2)]
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([
                NewTopic(topics[0], 1, 1, topic_configs={"retention.ms": "123000"}),
                NewTopic(topics[1], 1, 1, topic_configs={"retention.ms": "7200500"})])
            assert await topic_retention_seconds(stack.kafka_bootstrap, topics) == 7201
            assert await topic_retention_seconds(stack.kafka_bootstrap, topics[:1]) == 123
            assert await topic_retention_seconds("127.0.0.1:1", topics, timeout_s=2) is None
        finally:
            await admin.delete_topics(topics)
            await admin.close()
