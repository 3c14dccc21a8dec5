"""The Kafka side of the worker: one AIOKafkaConsumer in the pool's group, subscribed to every
tier topic, auto-commit off. Owned by `app`.

- Every fetched offset is tracked (offsets.OffsetTracker); `commit` commits per partition only
  up to the first unfinished offset, and `app` marks an offset done only once its result is
  durable, so a crash redelivers exactly what was not answered.
- Rebalance listener: on revocation it lets `app` finish (bounded) the work in hand for the
  revoked partitions and drop what has not started, commits what is finished, and forgets the
  partitions; on assignment it records that the group was joined (readiness).
- `set_paused_tiers` pauses and resumes tier partitions for the scheduler's backpressure.
- `stop` commits what is finished, then leaves the group (consumer.stop sends LeaveGroup).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from imagegen_api.workerconfig import KafkaSettings

from .logs import fields
from .offsets import OffsetTracker

log = logging.getLogger(__name__)

RevokeHook = Callable[[frozenset[TopicPartition]], Awaitable[None]]


class Consumer:
    def __init__(self, kafka: KafkaSettings, *, client_id: str, on_revoke: RevokeHook,
                 rebalance_timeout_ms: int | None = None) -> None:
        if not kafka.bootstrap_servers:
            raise ValueError("kafka.bootstrap_servers must be resolved before starting")
        self.settings = kafka
        self.tier_of: dict[str, str] = {topic: tier for tier, topic in kafka.tier_topics.items()}
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.joined = asyncio.Event()
        self.epoch = 0  # bumped at every revocation: work fetched before it is stale
        self._on_revoke = on_revoke
        self.rebalance_timeout_ms = rebalance_timeout_ms or min(kafka.max_poll_interval_ms, 120_000)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.group,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            rebalance_timeout_ms=self.rebalance_timeout_ms,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=256 * 1024,
        )
        self._lock = asyncio.Lock()

    @property
    def topics(self) -> list[str]:
        return sorted(self.tier_of)

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_Listener(self))

    async def fetch(self, *, timeout_ms: int,
                    max_records: int) -> list[ConsumerRecord[bytes, bytes]]:
        """Next records from unpaused partitions; each is tracked until marked done."""
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        records: list[ConsumerRecord[bytes, bytes]] = []
        for tp, msgs in batches.items():
            for msg in msgs:
                self.tracker.add(tp, msg.offset)
                records.append(msg)
        return records

    def done(self, topic: str, partition: int, offset: int) -> None:
        self.tracker.done(TopicPartition(topic, partition), offset)

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self.consumer.assignment())

    def set_paused_tiers(self, tiers: frozenset[str]) -> None:
        assigned = set(self.consumer.assignment())
        want = {tp for tp in assigned if self.tier_of.get(tp.topic) in tiers}
        paused = set(self.consumer.paused()) & assigned
        if want - paused:
            self.consumer.pause(*(want - paused))
        if paused - want:
            self.consumer.resume(*(paused - want))

    async def commit(self, partitions: frozenset[TopicPartition] | None = None) -> dict[str, int]:
        """Commit what is finished (all assigned partitions, or `partitions`); never raises."""
        async with self._lock:
            assigned = set(self.consumer.assignment())
            scope = assigned if partitions is None else assigned & set(partitions)
            offsets = self.tracker.committable(scope)
            if not offsets:
                return {}
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group rebalanced under us: the new owner re-reads from the last commit and
                # the job records deduplicate. Nothing to retry here.
                log.warning("commit refused after a rebalance", extra=fields(error=repr(exc)))
                return {}
            except KafkaError as exc:
                log.warning("commit failed, will retry with the next one",
                            extra=fields(error=repr(exc)))
                return {}
            self.tracker.committed(offsets)
            return {f"{tp.topic}:{tp.partition}": off for tp, off in offsets.items()}

    async def stop(self) -> None:
        """Commit what is finished and leave the group."""
        try:
            await self.commit()
        finally:
            await self.consumer.stop()

    async def _revoked(self, revoked: frozenset[TopicPartition]) -> None:
        log.info("partitions revoked", extra=fields(partitions=len(revoked)))
        self.epoch += 1
        try:
            await self._on_revoke(revoked)
        finally:
            await self.commit(revoked)
            left = self.tracker.forget(revoked)
            if left:
                log.info("left unfinished messages to the next owner",
                         extra=fields(messages=len(left)))

    def _assigned(self, assigned: frozenset[TopicPartition]) -> None:
        log.info("partitions assigned", extra=fields(
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)))
        self.joined.set()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: Consumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.owner._revoked(frozenset(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.owner._assigned(frozenset(assigned))
