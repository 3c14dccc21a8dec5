"""The Kafka side of the worker: one AIOKafkaConsumer in the pool's group, subscribed to every
tier topic, auto-commit off. Built by `wiring`, started and stopped by `app`, read by `dispatch`.

This module is the single owner of offsets (as faust's consumer is):
- every fetched offset is tracked (offsets.OffsetTracker); the rest of the worker says only
  `ack(ref)` once a message's answer is durable, and never commits;
- commits happen here, on one cadence: every `commit_interval_s` (a background task), on
  revocation (for the revoked partitions) and on `stop`. A commit covers each partition only up
  to its first unacknowledged offset, so a crash redelivers exactly what was not answered;
- every commit has a timeout: during a broker outage a commit gives up after
  `commit_timeout_s` (and is tried again at the next tick) instead of waiting for the
  coordinator forever, so fetch, drain and shutdown never hang on it.

Rebalance listener: on revocation it lets `dispatch` finish (bounded) the work in hand for the
revoked partitions and drop what has not started, commits what is finished, and forgets the
partitions; on assignment it records that the group was joined (readiness).
`set_paused_tiers` pauses and resumes tier partitions (backpressure, outages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from imagegen_api.workerconfig import KafkaSettings

from .logs import fields
from .offsets import OffsetTracker

log = logging.getLogger(__name__)

RevokeHook = Callable[[frozenset[TopicPartition]], Awaitable[None]]

COMMIT_INTERVAL_S = 0.5
COMMIT_TIMEOUT_S = 5.0
LEAVE_TIMEOUT_S = 5.0  # leaving the group during a broker outage must not hold the exit


class Acked(Protocol):
    """What `ack` needs of a message: its coordinates (work.MessageRef has them)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


class Consumer:
    def __init__(self, kafka: KafkaSettings, *, client_id: str,
                 rebalance_timeout_ms: int | None = None,
                 commit_interval_s: float = COMMIT_INTERVAL_S,
                 commit_timeout_s: float = COMMIT_TIMEOUT_S) -> None:
        if not kafka.bootstrap_servers:
            raise ValueError("kafka.bootstrap_servers must be resolved before starting")
        self.settings = kafka
        self.tier_of: dict[str, str] = {topic: tier for tier, topic in kafka.tier_topics.items()}
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.joined = asyncio.Event()
        self.epoch = 0  # bumped at every revocation: work fetched before it is stale
        self.commit_interval_s = commit_interval_s
        self.commit_timeout_s = commit_timeout_s
        self._on_revoke: RevokeHook | None = None
        self._committer: asyncio.Task[None] | None = None
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

    def on_revoke(self, hook: RevokeHook) -> None:
        """Who finishes or drops the work of revoked partitions (`dispatch`)."""
        self._on_revoke = hook

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        self._committer = asyncio.create_task(self._commit_every(), name="commit")

    async def fetch(self, *, timeout_ms: int,
                    max_records: int) -> list[ConsumerRecord[bytes, bytes]]:
        """Next records from unpaused partitions; each is tracked until acknowledged."""
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        records: list[ConsumerRecord[bytes, bytes]] = []
        for tp, msgs in batches.items():
            for msg in msgs:
                self.tracker.add(tp, msg.offset)
                records.append(msg)
        return records

    def ack(self, ref: Acked) -> None:
        """The message's answer is durable: its offset may be committed (at the next tick)."""
        self.tracker.done(TopicPartition(ref.topic, ref.partition), ref.offset)

    def is_pending(self, ref: Acked) -> bool:
        """Fetched here, not acknowledged, and its partition not revoked since."""
        return self.tracker.is_pending(TopicPartition(ref.topic, ref.partition), ref.offset)

    def pending_count(self) -> int:
        return self.tracker.pending_count()

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
        """Commit what is acknowledged (all assigned partitions, or `partitions`); never raises,
        never waits longer than `commit_timeout_s`. The committed positions, for logs/tests."""
        async with self._lock:
            assigned = set(self.consumer.assignment())
            scope = assigned if partitions is None else assigned & set(partitions)
            offsets = self.tracker.committable(scope)
            if not offsets:
                return {}
            try:
                async with asyncio.timeout(self.commit_timeout_s):
                    await self.consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group rebalanced under us: the new owner re-reads from the last commit and
                # the job records deduplicate. Nothing to retry here.
                log.warning("commit refused after a rebalance", extra=fields(error=repr(exc)))
                return {}
            except (KafkaError, TimeoutError) as exc:
                log.warning("commit failed, will retry at the next tick",
                            extra=fields(error=repr(exc)))
                return {}
            self.tracker.committed(offsets)
            return {f"{tp.topic}:{tp.partition}": off for tp, off in offsets.items()}

    async def stop(self) -> None:
        """Commit what is acknowledged and leave the group (bounded, even with Kafka down)."""
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
            self._committer = None
        try:
            await self.commit()
        finally:
            await self.close()

    async def close(self) -> None:
        """Leave the group without committing (idempotent); bounded by LEAVE_TIMEOUT_S."""
        if self._committer is not None:
            self._committer.cancel()
            self._committer = None
        try:
            async with asyncio.timeout(LEAVE_TIMEOUT_S):
                await self.consumer.stop()
        except TimeoutError:
            log.warning("leaving the group timed out; the session timeout will expel us")

    async def _commit_every(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval_s)
            await self.commit()

    async def _revoked(self, revoked: frozenset[TopicPartition]) -> None:
        log.info("partitions revoked", extra=fields(partitions=len(revoked)))
        self.epoch += 1
        try:
            if self._on_revoke is not None:
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
