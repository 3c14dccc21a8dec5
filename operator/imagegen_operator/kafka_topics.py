"""Creates a pool's Kafka topics when missing and grows their partitions to the spec.

Partitions never shrink (Kafka cannot); a spec asking for fewer is reported, not applied.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaError

from .builders.topics import TopicSpec
from .scaling.kafka_lag import describe_kafka_error

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
REQUEST_TIMEOUT_MS = 10_000


class KafkaUnavailable(RuntimeError):
    """Kafka could not be reached or refused the request; the message says where and why."""


class TopicManager:
    """One admin connection per bootstrap address, reused across reconciles."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                        client_id="imagegen-operator",
                                        request_timeout_ms=REQUEST_TIMEOUT_MS)
            try:
                await asyncio.wait_for(admin.start(), REQUEST_TIMEOUT_MS / 1000)
            except (KafkaError, OSError, TimeoutError) as err:
                await admin.close()
                raise KafkaUnavailable(
                    f"Kafka at {self.bootstrap} unreachable: {describe_kafka_error(err)}"
                ) from err
            self._admin = admin
        return self._admin

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def ensure(self, topics: list[TopicSpec]) -> list[str]:
        """Create missing topics, add partitions where the spec asks for more. Returns a list of
        human-readable actions taken (empty when everything already matched)."""
        async with self._lock:
            try:
                return await self._ensure(topics)
            except KafkaUnavailable:
                raise
            except (KafkaError, OSError, TimeoutError) as err:
                await self.close()  # reconnect on the next pass
                raise KafkaUnavailable(
                    f"Kafka at {self.bootstrap}: {describe_kafka_error(err)}") from err

    async def _ensure(self, topics: list[TopicSpec]) -> list[str]:
        admin = await self._client()
        described = await asyncio.wait_for(
            admin.describe_topics([t.name for t in topics]), REQUEST_TIMEOUT_MS / 1000)
        partitions = {d["topic"]: len(d["partitions"]) for d in described
                      if d.get("error_code", 0) == 0 and d["partitions"]}
        actions: list[str] = []
        missing = [t for t in topics if t.name not in partitions]
        if missing:
            resp = await admin.create_topics(
                [NewTopic(t.name, t.partitions, t.replication_factor) for t in missing])
            for name, code, *rest in resp.topic_errors:
                if code and code != TOPIC_ALREADY_EXISTS:
                    raise KafkaUnavailable(f"creating topic {name}: error {code} {rest}")
            actions.append("created topics " + ", ".join(t.name for t in missing)
                           + f" ({missing[0].partitions} partitions)")
        grow = {t.name: NewPartitions(t.partitions) for t in topics
                if t.name in partitions and partitions[t.name] < t.partitions}
        if grow:
            await admin.create_partitions(grow)
            actions.append("added partitions to " + ", ".join(sorted(grow)))
        return actions
