"""The dispatch loops of one worker: fetch loop and GPU loop, rebalance and drain. Built and
started by `app` once the models work and the consumer is started.

- fetch loop: applies the scheduler's backpressure (pause/resume tier partitions), fetches,
  runs `intake` on each record (answers rejections, duplicates and cache hits on the spot),
  queues the rest in the tier scheduler (`enqueue`). While a dependency an answer needs is down
  (`outage.Outages`) it fetches nothing: every partition is paused, the group membership kept.
- GPU loop: takes the next ready batch, runs the pipeline half in a thread, hands the delivery
  half (encode, upload, answer) to a task so that uploads overlap the next batch.

Neither loop commits: answers `ack` their offsets and the consumer commits on its own cadence.

Rebalance (`on_revoke`, called by the consumer): drop unstarted work of the revoked partitions,
let the work in hand finish (bounded). Drain (`finish`): stop fetching, drop what has not started
(it stays unacknowledged in Kafka for the next owner), finish the batch in hand and its
deliveries (bounded: deliveries stuck on an outage are given up), then the caller stops the
consumer (final commit, leave the group).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import TopicPartition
from imagegen_api.workerconfig import WorkerConfig

from .aio import wait_event
from .batchrun import Generated
from .consumer import Consumer
from .logs import fields
from .metrics import WorkerMetrics
from .outage import Abandoned
from .scheduler import Entry, TierScheduler
from .server import Health
from .wiring import Stages
from .work import MessageRef, Work

log = logging.getLogger(__name__)

MAX_DELIVERIES = 2  # batches whose uploads may overlap the next pipeline call
FETCH_TIMEOUT_MS = 200
DRAIN_DELIVERIES_S = 60.0  # at drain, deliveries still running after this are left to Kafka
DRAIN_OUTAGE_S = 3.0  # ... and after this while a dependency they need is down


def enqueue(scheduler: TierScheduler[Work], work: Work) -> Entry[Work]:
    """Queue an accepted request. One whose attempt already started elsewhere (redelivered
    after a worker died on it) runs alone: if it is what kills workers, it takes no neighbour
    with it, and neighbours' attempts are not spent on it."""
    return scheduler.push(work, tier=work.tier, key=work.compat_key,
                          size=work.request.num_images, partition=work.ref.partition_key,
                          solo=work.attempts >= 1)


class Dispatcher:
    def __init__(self, *, config: WorkerConfig, consumer: Consumer,
                 scheduler: TierScheduler[Work], stages: Stages, health: Health,
                 metrics: WorkerMetrics) -> None:
        self.config = config
        self.consumer = consumer
        self.scheduler = scheduler
        self.stages = stages
        self.outages = stages.outages
        self.health = health
        self.metrics = metrics
        self.stopping = False  # no new fetches, no new batches
        self.rebalancing = False  # no new batches while partitions are being handed over
        self.work_ready = asyncio.Event()
        self.deliveries: set[asyncio.Task[None]] = set()
        self.generating: asyncio.Task[Generated | None] | None = None
        self.failed = asyncio.Event()  # a delivery failed in a way nothing handles (a bug)
        self.fetch_task: asyncio.Task[None] | None = None
        self.gpu_task: asyncio.Task[None] | None = None

    def start(self) -> list[asyncio.Task[None]]:
        self.consumer.on_revoke(self.on_revoke)
        self.fetch_task = asyncio.create_task(self._fetch_loop(), name="fetch")
        self.gpu_task = asyncio.create_task(self._gpu_loop(), name="gpu")
        return [self.fetch_task, self.gpu_task]

    # --- loops -------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        max_records = max(8, 2 * self.config.batching.max_batch_size)
        all_tiers = frozenset(self.consumer.tier_of.values())
        while not self.stopping:
            outage = bool(self.outages.down)
            paused = all_tiers if outage else self.scheduler.paused_tiers()
            self.consumer.set_paused_tiers(paused)
            for tier in all_tiers:
                self.metrics.paused_tiers.labels(tier).set(1 if tier in paused else 0)
            # Fetching with every partition paused keeps the group membership alive.
            records = await self.consumer.fetch(timeout_ms=FETCH_TIMEOUT_MS,
                                                max_records=max_records)
            if not records:
                if outage:
                    await self.outages.wait_up(FETCH_TIMEOUT_MS / 1000)
                continue
            epoch = self.consumer.epoch
            refs = [MessageRef(r.topic, r.partition, r.offset, r.key, r.value) for r in records]
            works = await asyncio.gather(*(self.stages.intake.handle(ref) for ref in refs),
                                         return_exceptions=True)
            for ref, work in zip(refs, works, strict=True):
                if isinstance(work, Abandoned):
                    log.info("left to Kafka: stopping during an outage",
                             extra=fields(source=ref.source))
                    continue
                if isinstance(work, BaseException):
                    raise work
                if work is None:
                    continue
                work.epoch = epoch
                if not self.owned(work):
                    continue  # revoked while we looked at it: the next owner has it
                enqueue(self.scheduler, work)
            self.work_ready.set()
            self.update_gauges()

    async def _gpu_loop(self) -> None:
        while not self.stopping:
            self.work_ready.clear()
            batch = None if self.rebalancing else self.scheduler.next_batch()
            if batch is None:
                wake = None if self.rebalancing else self.scheduler.wake_at()
                timeout = None if wake is None else max(0.001, wake - self.scheduler.clock())
                await wait_event(self.work_ready, timeout)
                continue
            self.update_gauges()
            self.health.generating_since = time.monotonic()
            self.generating = asyncio.create_task(self.stages.batches.generate(batch))
            try:
                generated = await asyncio.shield(self.generating)
            except Abandoned:
                generated = None
                log.info("batch left to Kafka: stopping during an outage")
            finally:
                self.health.generating_since = None
                self.generating = None
            if generated is not None:
                task = asyncio.create_task(self._deliver(generated))
                self.deliveries.add(task)
                task.add_done_callback(self._delivery_done)
            while len(self.deliveries) >= MAX_DELIVERIES:
                await asyncio.wait(set(self.deliveries), return_when=asyncio.FIRST_COMPLETED)
            self.update_gauges()

    async def _deliver(self, generated: Generated) -> None:
        try:
            await self.stages.batches.deliver(generated)
        except Abandoned:
            log.info("delivery left to Kafka: stopping during an outage")

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self.deliveries.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery failed", exc_info=task.exception())
            self.failed.set()

    # --- ownership ---------------------------------------------------------------------------

    def owned(self, work: Work) -> bool:
        """Still ours: fetched since the last revocation, and not answered."""
        return work.epoch == self.consumer.epoch and self.consumer.is_pending(work.ref)

    def requeue(self, entry: Entry[Work]) -> None:
        """A failed attempt below the limit: run it again, alone (called by `batchrun`)."""
        if self.stopping or not self.owned(entry.item):
            log.info("not retrying here: the message goes back to Kafka",
                     extra=fields(request_id=entry.item.request_id))
            return
        self.scheduler.requeue(entry)
        self.work_ready.set()

    async def on_revoke(self, revoked: frozenset[TopicPartition]) -> None:
        """Rebalance: drop unstarted work of revoked partitions, let work in hand finish."""
        self.rebalancing = True
        try:
            keys = {(tp.topic, tp.partition) for tp in revoked}
            dropped = self.scheduler.drop(lambda e: e.partition in keys)
            if dropped:
                log.info("dropped queued requests of revoked partitions",
                         extra=fields(requests=len(dropped)))
            await self._settle(limit_s=0.8 * self.consumer.rebalance_timeout_ms / 1000)
        finally:
            self.rebalancing = False
            self.work_ready.set()

    async def _settle(self, limit_s: float) -> None:
        """Wait (bounded) until no pipeline call or delivery is in progress."""
        deadline = time.monotonic() + limit_s
        while True:
            busy: set[asyncio.Task[Any]] = set(self.deliveries)
            if self.generating is not None:
                busy.add(self.generating)
            remaining = deadline - time.monotonic()
            if not busy or remaining <= 0:
                if busy:
                    log.warning("work in hand did not finish in time",
                                extra=fields(tasks=len(busy)))
                return
            await asyncio.wait(busy, timeout=remaining)
            await asyncio.sleep(0)  # let the GPU loop hand its batch to a delivery task

    # --- drain and abort ---------------------------------------------------------------------

    async def finish(self) -> None:
        """Stop fetching, drop what has not started, finish the batch in hand and deliveries."""
        self.stopping = True
        self.outages.stop.set()  # retries waiting on an outage give up: left to Kafka
        self.work_ready.set()
        if self.fetch_task is not None:
            await self.fetch_task
        self.scheduler.drain_all()
        if self.gpu_task is not None:
            await self.gpu_task
        await self._finish_deliveries()
        await self.stages.batches.parking.close()  # parked copies stay in Kafka (leases.py)

    async def _finish_deliveries(self) -> None:
        """Let deliveries finish; give up those stuck on an outage (a publish in flight can
        take the producer's request timeout) so that the exit stays within the grace period."""
        t0 = time.monotonic()
        down_since: float | None = None
        while self.deliveries:
            await asyncio.wait(set(self.deliveries), timeout=0.2)
            now = time.monotonic()
            down_since = (down_since or now) if self.outages.down else None
            if now - t0 > DRAIN_DELIVERIES_S or (
                    down_since is not None and now - down_since > DRAIN_OUTAGE_S):
                late = set(self.deliveries)
                log.warning("deliveries still running at drain: left to Kafka",
                            extra=fields(batches=len(late), down=sorted(self.outages.down)))
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
                return

    async def abort(self) -> None:
        """Stop without finishing anything; what is not acknowledged goes back to Kafka."""
        self.stopping = True
        self.outages.stop.set()
        tasks = [t for t in (self.fetch_task, self.gpu_task) if t is not None]
        for t in [*tasks, *self.deliveries]:
            t.cancel()
        await asyncio.gather(*tasks, *self.deliveries, return_exceptions=True)
        await self.stages.batches.parking.close()

    # --- reporting ---------------------------------------------------------------------------

    def pending(self) -> int:
        return self.consumer.pending_count()

    def update_gauges(self) -> None:
        self.metrics.in_flight.set(self.pending())
        for tier, depth in self.scheduler.depths().items():
            self.metrics.queued.labels(tier).set(depth)
