"""LagReader against the real local Kafka: offsets produced and committed here are the truth."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from imagegen_operator.scaling.kafka_lag import LagReader, LagUnavailable

from .conftest import StackEnv

pytestmark = pytest.mark.integration


async def produce(bootstrap: str, topic: str, per_partition: list[int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sends = [
            await producer.send(topic, b"x", partition=p)
            for p, n in enumerate(per_partition)
            for _ in range(n)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def commit(bootstrap: str, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
    """Commit offsets for `group` as a worker would, without joining (manual assignment)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = {TopicPartition(t, p): o for (t, p), o in offsets.items()}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()


TopicFactory = Callable[..., Any]


async def test_lag_per_tier_matches_produced_and_committed(
    stack: StackEnv, kafka_topic: TopicFactory
) -> None:
    turbo, fast, relax = (
        await kafka_topic(partitions=3, prefix="lag-turbo"),
        await kafka_topic(partitions=2, prefix="lag-fast"),
        await kafka_topic(partitions=1, prefix="lag-relax"),
    )
    bootstrap = stack.kafka_bootstrap
    await produce(bootstrap, turbo, [10, 4, 0])
    await produce(bootstrap, fast, [5, 5])
    group = f"lag-{uuid.uuid4().hex[:8]}"
    # turbo p0 half read, p1 fully read, p2 never committed (empty); fast p0 at 1, p1 never
    # committed (counts from the log start); relax nothing at all.
    await commit(bootstrap, group, {(turbo, 0): 5, (turbo, 1): 4, (fast, 0): 1})
    tiers = {"turbo": turbo, "fast": fast, "relax": relax}

    async with LagReader(bootstrap) as reader:
        snap = await reader.read(group, tiers)
        assert snap.by_tier == {"turbo": 5, "fast": 9, "relax": 0}
        assert snap.total == 14
        assert snap.partitions_total == 6
        assert snap.busiest_tier_partitions == 2  # fast has the most lag
        assert snap.missing_commits == 3  # turbo p2, fast p1, relax p0
        assert snap.read_ms > 0
        by_tp = {(p.topic, p.partition): p for p in snap.partitions}
        assert by_tp[(turbo, 0)].end_offset == 10
        assert by_tp[(turbo, 0)].committed == 5
        assert by_tp[(fast, 1)].committed is None

        # The same client, reused: more work arrives, the group catches up elsewhere.
        await produce(bootstrap, relax, [7])
        await commit(bootstrap, group, {(fast, 0): 5, (fast, 1): 5})
        again = await reader.read(group, tiers)
        assert again.by_tier == {"turbo": 5, "fast": 0, "relax": 7}
        assert again.busiest_tier_partitions == 1


async def test_a_group_that_never_committed_counts_everything(
    stack: StackEnv, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic(partitions=2, prefix="lag-new")
    await produce(stack.kafka_bootstrap, topic, [3, 4])
    async with LagReader(stack.kafka_bootstrap) as reader:
        snap = await reader.read(f"never-{uuid.uuid4().hex[:8]}", {"turbo": topic})
    assert (snap.total, snap.missing_commits) == (7, 2)


async def test_missing_topic_is_reported_not_created(
    stack: StackEnv, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic(partitions=1, prefix="lag-ok")
    await produce(stack.kafka_bootstrap, topic, [1])  # returns once the topic is served
    ghost = f"lag-ghost-{uuid.uuid4().hex[:8]}"
    async with LagReader(stack.kafka_bootstrap) as reader:
        with pytest.raises(LagUnavailable, match=f"topics missing in Kafka at .*: {ghost}$"):
            await reader.read("g", {"turbo": topic, "fast": ghost})
        # Still usable after the error.
        assert (await reader.read("g", {"turbo": topic})).total == 1
        with pytest.raises(LagUnavailable, match="topics missing"):
            await reader.read("g", {"fast": ghost})


async def test_unreachable_kafka_raises_lag_unavailable_quickly() -> None:
    reader = LagReader("127.0.0.1:1", timeout_s=2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LagUnavailable, match=r"127\.0\.0\.1:1"):
        await reader.read("g", {"turbo": "t"})
    with pytest.raises(LagUnavailable):  # a later read retries and fails the same way
        await reader.read("g", {"turbo": "t"})
    assert loop.time() - started < 10
    await reader.close()
