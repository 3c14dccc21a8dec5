"""The consumer owns offsets (issue 10): the worker only acknowledges; commits happen on the
consumer's own cadence, never past an unacknowledged offset, and never wait longer than the
commit timeout (issue 17: a commit used to wait for the coordinator forever). Real Kafka."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from imagegen_worker.consumer import Consumer
from imagegen_worker.work import MessageRef

from tests.integration.worker.harness import make_pool

pytestmark = pytest.mark.integration


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        meta = (await admin.list_consumer_group_offsets(group)).get(tp)
        return meta.offset if meta is not None and meta.offset >= 0 else None
    finally:
        await admin.close()


async def test_acks_are_committed_by_the_consumer_alone_and_commits_are_bounded(
    stack: Any, package_tmp: Path
) -> None:
    pool = await make_pool(stack, package_tmp, "offsets")
    kafka = pool.config.kafka.model_copy(update={"bootstrap_servers": stack.kafka_bootstrap})
    topic = kafka.tier_topics["fast"]
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, value=b"m%d" % i, key=b"k", partition=0)
    finally:
        await producer.stop()
    consumer = Consumer(kafka, client_id="offsets", commit_interval_s=0.2)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        refs: list[MessageRef] = []
        deadline = time.monotonic() + 60
        while len(refs) < 3 and time.monotonic() < deadline:
            for r in await consumer.fetch(timeout_ms=500, max_records=10):
                refs.append(MessageRef(r.topic, r.partition, r.offset, r.key, r.value))
        assert sorted(r.offset for r in refs if r.partition == 0) == [0, 1, 2]
        first, second, third = sorted(refs, key=lambda r: r.offset)

        consumer.ack(second)  # out of order: nothing may be committed past offset 0
        consumer.ack(first)
        # Nobody calls commit(): the consumer's own timer commits up to the first unacked.
        positions: list[int | None] = []

        async def poll_committed() -> None:
            positions.append(await committed(stack.kafka_bootstrap, kafka.group, tp))

        deadline = time.monotonic() + 30
        while positions[-1:] != [2] and time.monotonic() < deadline:
            await poll_committed()
        assert positions[-1] == 2, positions
        assert consumer.is_pending(third) and not consumer.is_pending(first)

        # A commit that cannot finish in time gives up (returns nothing, raises nothing) and a
        # later tick commits: the loops and the drain never hang on the coordinator.
        consumer.commit_timeout_s = 1e-6
        consumer.ack(third)
        assert await consumer.commit() == {}
        assert consumer.tracker.committable([tp]) == {tp: 3}  # still owed
        consumer.commit_timeout_s = 5.0
        deadline = time.monotonic() + 30
        while positions[-1:] != [3] and time.monotonic() < deadline:
            await poll_committed()
        assert positions[-1] == 3, positions
    finally:
        await consumer.stop()
