"""TopicManager against the real local Kafka: tier topics are created with the size contract's
max.message.bytes, an existing topic whose value drifted is brought back (its other overrides
kept), and the broker then refuses a message over the limit while accepting one at it."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from imagegen_api import naming
from imagegen_api.specs import GenerationPoolSpec
from imagegen_operator.builders.topics import pool_topics
from imagegen_operator.kafka_topics import TopicManager, topic_overrides

from .conftest import StackEnv

pytestmark = pytest.mark.integration

LIMIT = str(naming.MAX_MESSAGE_BYTES)


async def overrides(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    (resp,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    ((code, message, _t, _n, entries),) = resp.resources
    assert code == 0, message
    return topic_overrides(entries, resp.API_VERSION)


async def drift(admin: AIOKafkaAdminClient, topic: str, configs: dict[str, str]) -> None:
    """Alter `configs` by hand and wait until describe shows them: the broker applies a change
    through its metadata log, so a describe right after the alter can still show the old value
    (and an alter racing the topic's creation can be refused, so it is sent again)."""
    deadline = time.monotonic() + 15
    while True:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                  configs=configs)])
        current = await overrides(admin, topic)
        if all(current.get(k) == v for k, v in configs.items()):
            return
        assert time.monotonic() < deadline, f"{configs} never applied to {topic}: {current}"
        await asyncio.sleep(0.5)


async def test_tier_topics_get_max_message_bytes_and_drift_is_corrected(stack: StackEnv) -> None:
    pool = f"mmb{uuid.uuid4().hex[:6]}"
    spec = GenerationPoolSpec.model_validate({"models": ["m"], "queue": {"partitions": 1}})
    topics = pool_topics("ns", pool, spec)
    tier = naming.tier_topic("ns", pool, naming.DEFAULT_TIERS[0])
    manager = TopicManager(stack.kafka_bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        created = await manager.ensure(topics)
        assert any("created topics" in a for a in created), created
        assert (await overrides(admin, tier)).get("max.message.bytes") == LIMIT
        assert "max.message.bytes" not in await overrides(admin, naming.results_topic("ns", pool))
        assert await manager.ensure(topics) == []  # nothing to do the second time

        # someone lowers the limit and adds a retention override: ours comes back, theirs stays
        await drift(admin, tier, {"max.message.bytes": "1000", "retention.ms": "86400000"})
        actions = await manager.ensure(topics)
        assert actions == [f"set max.message.bytes on {tier}"], actions
        assert await overrides(admin, tier) == {"max.message.bytes": LIMIT,
                                                "retention.ms": "86400000"}

        # the broker enforces it: a request at the contract's limit passes, a larger one fails
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all",
                                    max_request_size=4 * naming.MAX_MESSAGE_BYTES)
        await producer.start()
        try:
            await producer.send_and_wait(tier, b"x" * naming.MAX_REQUEST_BYTES, key=b"ok")
            with pytest.raises(KafkaError):
                await producer.send_and_wait(tier, b"x" * (naming.MAX_MESSAGE_BYTES + 1),
                                             key=b"big")
        finally:
            await producer.stop()
    finally:
        await admin.delete_topics([t.name for t in topics])
        await admin.close()
        await manager.close()
