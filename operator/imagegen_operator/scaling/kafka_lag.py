"""Reads a consumer group's lag from Kafka: the only Kafka-touching module of the operator.

One ``LagReader`` per bootstrap address, kept open and reused every poll (connecting costs more
than the read). A read is, in one concurrent round: committed offsets from the group coordinator,
end offsets and beginning offsets from the partition leaders. Topic partition lists come from
cluster metadata, cached for ``metadata_max_age_s``.

Metadata is listed for all topics and never requested per topic name: a per-topic metadata request
auto-creates a missing topic on brokers with ``auto.create.topics.enable`` (Kafka's default), and
the lag reader must report a missing topic, not create it.

A group that never committed (new pool, workers not up yet) is not an error: every partition then
counts from its log start, as the workers (``auto_offset_reset="earliest"``) will.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from .lag import LagSnapshot, compute_lag


class LagUnavailable(Exception):
    """Lag could not be read (Kafka unreachable, timeout, topics missing); the message says why."""


class LagReader:
    def __init__(
        self,
        bootstrap: str,
        *,
        timeout_s: float = 5.0,
        metadata_max_age_s: float = 30.0,
        client_id: str = "imagegen-operator-lag",
    ) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.metadata_max_age_s = metadata_max_age_s
        self._client_id = client_id
        self._admin: Any = None
        self._consumer: Any = None
        self._lock = asyncio.Lock()
        self._coordinators: dict[str, int] = {}
        self._partitions: dict[str, list[int]] = {}
        self._partitions_at = 0.0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect both clients. Failing raises LagUnavailable; a later read() retries."""
        if self._admin is not None:
            return
        ms = int(self.timeout_s * 1000)
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id=self._client_id, request_timeout_ms=ms
        )
        # No group: this consumer only looks up offsets, it never joins or commits.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=ms,
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                await admin.start()
                await consumer.start()
        except (KafkaError, OSError, TimeoutError) as err:
            await _close_quietly(admin, consumer)
            msg = f"Kafka at {self.bootstrap} unreachable: {describe_kafka_error(err)}"
            raise LagUnavailable(msg) from err
        self._admin, self._consumer = admin, consumer

    async def close(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        self._coordinators.clear()
        self._partitions.clear()
        await _close_quietly(admin, consumer)

    async def read(self, group: str, tier_topics: Mapping[str, str]) -> LagSnapshot:
        """Lag of ``group`` on each tier's topic (tier -> topic)."""
        async with self._lock:  # one read at a time per client: reads share cached metadata
            started = time.perf_counter()
            await self.start()
            try:
                async with asyncio.timeout(self.timeout_s):
                    ends, begins, committed = await self._offsets(group, tier_topics)
            except LagUnavailable:
                raise
            except (KafkaError, OSError, TimeoutError) as err:
                # Forget cached metadata and coordinator: the cluster may have moved.
                self._partitions_at = 0.0
                self._coordinators.pop(group, None)
                raise LagUnavailable(
                    f"reading lag of group {group} from Kafka at {self.bootstrap} failed: "
                    f"{describe_kafka_error(err)}"
                ) from err
            read_ms = (time.perf_counter() - started) * 1000
            return compute_lag(tier_topics, ends, committed, begins, read_ms=read_ms)

    async def _offsets(
        self, group: str, tier_topics: Mapping[str, str]
    ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        topics = list(dict.fromkeys(tier_topics.values()))
        partitions = await self._topic_partitions(topics)
        tps = [TopicPartition(t, p) for t in topics for p in partitions[t]]
        coordinator = self._coordinators.get(group)
        if coordinator is None:
            coordinator = int(await self._admin.find_coordinator(group))
            self._coordinators[group] = coordinator
        ends, begins, committed = await asyncio.gather(
            self._consumer.end_offsets(tps),
            self._consumer.beginning_offsets(tps),
            self._admin.list_consumer_group_offsets(
                group, group_coordinator_id=coordinator, partitions=tps
            ),
        )
        return (
            {(tp.topic, tp.partition): int(o) for tp, o in ends.items()},
            {(tp.topic, tp.partition): int(o) for tp, o in begins.items()},
            # -1 means "no committed offset"; compute_lag treats it as such.
            {(tp.topic, tp.partition): int(om.offset) for tp, om in committed.items()},
        )

    async def _topic_partitions(self, topics: list[str]) -> dict[str, list[int]]:
        fresh = time.monotonic() - self._partitions_at < self.metadata_max_age_s
        if not fresh or any(t not in self._partitions for t in topics):
            # topics=None lists every topic and never auto-creates one (see the module doc).
            described = await self._admin.describe_topics(None)
            self._partitions = {
                d["topic"]: sorted(int(p["partition"]) for p in d["partitions"])
                for d in described
                if not d["error_code"]
            }
            self._partitions_at = time.monotonic()
        missing = [t for t in topics if not self._partitions.get(t)]
        if missing:
            self._partitions_at = 0.0  # look again next read: the operator may be creating them
            msg = f"topics missing in Kafka at {self.bootstrap}: {', '.join(missing)}"
            raise LagUnavailable(msg)
        return {t: self._partitions[t] for t in topics}


def describe_kafka_error(err: BaseException) -> str:
    """`KafkaConnectionError: Unable to bootstrap ...`, `timed out`: the class named once."""
    if isinstance(err, TimeoutError):
        return "timed out"
    name, text = type(err).__name__, str(err)
    # aiokafka errors already start with their class name.
    return text if text.startswith(name) else f"{name}: {text}" if text else name


async def _close_quietly(admin: Any, consumer: Any) -> None:
    for close in (admin and admin.close, consumer and consumer.stop):
        if close is None:
            continue
        try:
            await close()
        except (KafkaError, OSError, TimeoutError):
            pass  # closing a client whose broker is gone: nothing to recover
