"""The worker process: start-up order, the two loops, drain and shutdown. Built and run by `main`.

Start-up: HTTP probes → Redis + heartbeats (state loading) → models loaded and warmed up (in a
thread) → bucket, producer, consumer → ready once the consumer joined the group. The consumer
joins only after the models work, so a worker never holds partitions it cannot serve.

Two loops share the event loop:
- fetch loop: applies the scheduler's backpressure (pause/resume tier partitions), fetches,
  runs `intake` on each record (answers rejections, duplicates and cache hits on the spot),
  queues the rest in the tier scheduler, commits what is finished.
- GPU loop: takes the next ready batch, runs the pipeline half in a thread, hands the delivery
  half (encode, upload, answer, commit) to a task so that uploads overlap the next batch.

Drain (SIGTERM, SIGINT or POST /drain): not ready; stop fetching; drop what has not started (it
stays uncommitted in Kafka for the next owner); finish the batch in hand and its deliveries;
commit; leave the group. SIGTERM/SIGINT then exit 0; /drain leaves the process idle until one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from aiokafka import TopicPartition
from imagegen_api import naming
from imagegen_api.messages import Heartbeat, WorkerState
from imagegen_api.specs import ImageModelSpec
from imagegen_api.workerconfig import WorkerConfig
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import heartbeat
from .aio import wait_event
from .batchrun import BatchRunner, Generated
from .cache import ImageCache
from .consumer import Consumer
from .faults import Faults
from .intake import Intake
from .logs import fields
from .metrics import WorkerMetrics
from .respond import Responder
from .results import JobRecords, ResultPublisher
from .scheduler import Entry, TierScheduler
from .server import Health, HttpServer
from .settings import Settings
from .stats import WorkerStats
from .storage import ObjectStore
from .work import MessageRef, Runner, Work

log = logging.getLogger(__name__)

Loader = Callable[[str, ImageModelSpec], Runner]
MAX_DELIVERIES = 2  # batches whose uploads may overlap the next pipeline call
FETCH_TIMEOUT_MS = 200


class Fatal(RuntimeError):
    """The worker cannot go on (e.g. results cannot be published); exit non-zero."""


class WorkerApp:
    def __init__(self, settings: Settings, config: WorkerConfig, *,
                 loader: Loader | None = None) -> None:
        self.settings = settings
        self.config = config
        self.worker = settings.pod_name
        self.loader = loader or self._load_runner
        self.metrics = WorkerMetrics()
        self.stats = WorkerStats()
        self.health = Health(stuck_after_s=config.kafka.max_poll_interval_ms / 1000)
        self.faults = Faults.parse(settings.fault_inject)
        self.state: WorkerState = "starting"
        self.started_at = time.time()
        self.runners: dict[str, Runner] = {}
        self.scheduler: TierScheduler[Work] = TierScheduler(
            config.kafka.tiers,
            max_batch_size=config.batching.max_batch_size,
            max_wait_ms=config.batching.max_wait_ms,
        )
        self.abandoned_threads = False  # a model load was still running at exit
        self._stopping = False  # no new fetches, no new batches
        self._rebalancing = False  # no new batches while partitions are being handed over
        self._deliveries: set[asyncio.Task[None]] = set()
        self._generating: asyncio.Task[Generated | None] | None = None
        self._signals = 0

    # --- entry -------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; the process exit code."""
        self._exit = asyncio.Event()
        self._drain = asyncio.Event()
        self._fatal = asyncio.Event()
        self._work_ready = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        if self.faults.active:
            log.warning("fault injection is ON (test-only)", extra=fields(spec=self.faults))

        self.server = HttpServer(self.health, self.metrics, port=self.settings.http_port,
                                 on_drain=self.request_drain,
                                 in_flight=lambda: self._pending())
        await self.server.start()
        redis_url = self.config.cache.redis_url
        assert redis_url is not None  # Settings.resolve guarantees it
        self.redis = aioredis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5,
                                       health_check_interval=15)
        # The cache fails fast: no retries, short timeouts, a breaker in ImageCache.
        self.redis_cache = aioredis.from_url(redis_url, socket_connect_timeout=0.5,
                                             socket_timeout=1, retry=Retry(NoBackoff(), 0))
        self.heartbeats = heartbeat.Heartbeater(
            self.redis, naming.workers_key(self.config.namespace, self.config.pool), self.worker,
            self.config.heartbeat_seconds, self._heartbeat, self.metrics,
        )
        beat_task = asyncio.create_task(self.heartbeats.run(), name="heartbeat")
        code = 0
        try:
            code = await self._serve()
        except Exception:
            log.exception("worker failed")
            self._set_state("failed")
            code = 1
        finally:
            beat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat_task
            if code == 0:
                await self.heartbeats.remove()
            else:
                await self.heartbeats.beat_once()
            await self._close()
        log.info("worker exits", extra=fields(code=code, processed=self.stats.processed))
        return code

    def request_drain(self) -> None:
        if not self._drain.is_set():
            log.info("drain requested")
        self.health.draining = True  # not ready from now on; /drain reports it at once
        self._drain.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        log.info("signal received", extra=fields(signal=sig.name, count=self._signals))
        if self._signals > 1:
            log.warning("second signal: exiting now, without finishing the batch in hand")
            logging.shutdown()
            os._exit(1)  # what is not committed is redelivered to another worker
        self._drain.set()
        self._exit.set()

    # --- phases ------------------------------------------------------------------------------

    async def _serve(self) -> int:
        self._set_state("loading")
        if not await self._until_exit(self._load_models()):
            self.abandoned_threads = True
            return 0
        if not await self._until_exit(self._connect()):
            self.abandoned_threads = True
            return 0

        loops = [
            asyncio.create_task(self._fetch_loop(), name="fetch"),
            asyncio.create_task(self._gpu_loop(), name="gpu"),
            asyncio.create_task(self._watch_join(), name="join"),
        ]
        self._loops = loops
        drain_wait = asyncio.create_task(self._drain.wait())
        fatal_wait = asyncio.create_task(self._fatal.wait())
        try:
            await asyncio.wait([drain_wait, fatal_wait, *loops[:2]],
                               return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in loops[:2] if t.done() and t.exception() is not None]
            if failed or self._fatal.is_set():
                for t in failed:
                    log.error("loop failed", exc_info=t.exception(),
                              extra=fields(loop=t.get_name()))
                await self._abort(loops)
                return 1
            await self._graceful_drain(loops)
            if self._fatal.is_set():
                return 1
            if not self._exit.is_set():
                self._set_state("draining")
                await self._exit.wait()
            return 0
        finally:
            drain_wait.cancel()
            fatal_wait.cancel()

    async def _until_exit(self, coro: Any) -> bool:
        """Await `coro` unless an exit is requested first; False then (a thread it started,
        such as a model load, cannot be interrupted and is abandoned)."""
        task = asyncio.ensure_future(coro)
        exit_wait = asyncio.create_task(self._exit.wait())
        await asyncio.wait([task, exit_wait], return_when=asyncio.FIRST_COMPLETED)
        exit_wait.cancel()
        if task.done():
            task.result()  # re-raise a failure
            return True
        log.info("exit requested while starting")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return False

    async def _load_models(self) -> None:
        for entry in self.config.models:
            t0 = time.perf_counter()
            runner = await asyncio.to_thread(self.loader, entry.name, entry.spec)
            self.runners[entry.name] = runner
            log.info("model loaded", extra=fields(model=entry.name, revision=runner.revision,
                                                  device=runner.device,
                                                  seconds=round(time.perf_counter() - t0, 2)))
        self.health.models_loaded = True
        for name, runner in self.runners.items():
            t0 = time.perf_counter()
            await asyncio.to_thread(runner.warmup)
            log.info("model warmed up", extra=fields(
                model=name, seconds=round(time.perf_counter() - t0, 2)))
        self.health.warmed_up = True
        self.heartbeats.poke()

    async def _connect(self) -> None:
        """Bucket, producer, stages, then the consumer: it joins the group last."""
        self.store = ObjectStore(self.config.storage, self.config.namespace, self.config.pool)
        await self.store.ensure_bucket()
        kafka = self.config.kafka
        assert kafka.bootstrap_servers is not None
        self.publisher = ResultPublisher(kafka.bootstrap_servers, results_topic=kafka.results_topic,
                                         dlq_topic=kafka.dlq_topic, client_id=self.worker)
        await self.publisher.start()
        self.consumer = Consumer(kafka, client_id=self.worker, on_revoke=self._on_revoke)
        self._build_stages()
        await self.consumer.start()

    def _load_runner(self, name: str, spec: ImageModelSpec) -> Runner:
        from .pipelines import ModelRunner  # torch is imported only when a model is loaded

        runner: Runner = ModelRunner.load(name, spec, device=self.settings.device,
                                          cache_dir=self.settings.model_cache)
        return runner

    def _build_stages(self) -> None:
        self.records = JobRecords(self.redis, ttl_seconds=self.config.job_ttl_seconds,
                                  worker=self.worker)
        self.cache = ImageCache(self.redis_cache if self.config.cache.enabled else None,
                                ttl_seconds=self.config.cache.ttl_seconds, metrics=self.metrics)
        self.responder = Responder(records=self.records, publisher=self.publisher,
                                   store=self.store, done=self._done, metrics=self.metrics,
                                   stats=self.stats, worker=self.worker)
        self.intake = Intake(config=self.config, runners=self.runners,
                             tier_of=self.consumer.tier_of, records=self.records,
                             cache=self.cache, responder=self.responder, metrics=self.metrics,
                             worker=self.worker)
        self.batches = BatchRunner(config=self.config, runners=self.runners,
                                   records=self.records, cache=self.cache, store=self.store,
                                   responder=self.responder, intake=self.intake,
                                   metrics=self.metrics, stats=self.stats, faults=self.faults,
                                   requeue=self._requeue)

    async def _watch_join(self) -> None:
        await self.consumer.joined.wait()
        self.health.joined = True
        if not self.health.draining:
            self._set_state("ready")
            log.info("ready", extra=fields(models=list(self.runners)))

    # --- loops -------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        max_records = max(8, 2 * self.config.batching.max_batch_size)
        while not self._stopping:
            paused = self.scheduler.paused_tiers()
            self.consumer.set_paused_tiers(paused)
            for tier in self.consumer.tier_of.values():
                self.metrics.paused_tiers.labels(tier).set(1 if tier in paused else 0)
            records = await self.consumer.fetch(timeout_ms=FETCH_TIMEOUT_MS,
                                                max_records=max_records)
            if not records:
                continue
            epoch = self.consumer.epoch
            refs = [MessageRef(r.topic, r.partition, r.offset, r.key, r.value) for r in records]
            works = await asyncio.gather(*(self.intake.handle(ref) for ref in refs))
            for work in works:
                if work is None:
                    continue
                work.epoch = epoch
                if not self._owned(work):
                    continue  # revoked while we looked at it: the next owner has it
                self.scheduler.push(work, tier=work.tier, key=work.compat_key,
                                    size=work.request.num_images,
                                    partition=work.ref.partition_key)
            self._work_ready.set()
            await self.consumer.commit()
            self._update_gauges()

    async def _gpu_loop(self) -> None:
        while not self._stopping:
            self._work_ready.clear()
            batch = None if self._rebalancing else self.scheduler.next_batch()
            if batch is None:
                wake = None if self._rebalancing else self.scheduler.wake_at()
                timeout = None if wake is None else max(0.001, wake - self.scheduler.clock())
                await wait_event(self._work_ready, timeout)
                continue
            self._update_gauges()
            self.health.generating_since = time.monotonic()
            self._generating = asyncio.create_task(self.batches.generate(batch))
            try:
                generated = await asyncio.shield(self._generating)
            finally:
                self.health.generating_since = None
                self._generating = None
            if generated is not None:
                task = asyncio.create_task(self._deliver(generated))
                self._deliveries.add(task)
                task.add_done_callback(self._delivery_done)
            else:
                await self.consumer.commit()
            while len(self._deliveries) >= MAX_DELIVERIES:
                await asyncio.wait(set(self._deliveries), return_when=asyncio.FIRST_COMPLETED)
            self._update_gauges()

    async def _deliver(self, generated: Generated) -> None:
        await self.batches.deliver(generated)
        await self.consumer.commit()

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery failed: results cannot be made durable", exc_info=task.exception())
            self._fatal.set()

    # --- offsets and ownership ---------------------------------------------------------------

    def _done(self, ref: MessageRef) -> None:
        self.consumer.done(ref.topic, ref.partition, ref.offset)

    def _owned(self, work: Work) -> bool:
        """Still ours: fetched since the last revocation, and not answered."""
        ref = work.ref
        return work.epoch == self.consumer.epoch and self.consumer.tracker.is_pending(
            TopicPartition(ref.topic, ref.partition), ref.offset)

    def _pending(self) -> int:
        consumer = getattr(self, "consumer", None)
        return consumer.tracker.pending_count() if consumer is not None else 0

    def _requeue(self, entry: Entry[Work]) -> None:
        if self._stopping or not self._owned(entry.item):
            log.info("not retrying here: the message goes back to Kafka",
                     extra=fields(request_id=entry.item.request_id))
            return
        self.scheduler.requeue(entry)
        self._work_ready.set()

    async def _on_revoke(self, revoked: frozenset[TopicPartition]) -> None:
        """Rebalance: drop unstarted work of revoked partitions, let work in hand finish."""
        self._rebalancing = True
        try:
            keys = {(tp.topic, tp.partition) for tp in revoked}
            dropped = self.scheduler.drop(lambda e: e.partition in keys)
            if dropped:
                log.info("dropped queued requests of revoked partitions",
                         extra=fields(requests=len(dropped)))
            await self._settle(limit_s=0.8 * self.consumer.rebalance_timeout_ms / 1000)
        finally:
            self._rebalancing = False
            self._work_ready.set()

    async def _settle(self, limit_s: float) -> None:
        """Wait (bounded) until no pipeline call or delivery is in progress."""
        deadline = time.monotonic() + limit_s
        while True:
            busy: set[asyncio.Task[Any]] = set(self._deliveries)
            if self._generating is not None:
                busy.add(self._generating)
            remaining = deadline - time.monotonic()
            if not busy or remaining <= 0:
                if busy:
                    log.warning("work in hand did not finish in time",
                                extra=fields(tasks=len(busy)))
                return
            await asyncio.wait(busy, timeout=remaining)
            await asyncio.sleep(0)  # let the GPU loop hand its batch to a delivery task

    # --- drain and shutdown ------------------------------------------------------------------

    async def _graceful_drain(self, loops: list[asyncio.Task[None]]) -> None:
        t0 = time.monotonic()
        self.health.draining = True
        self._set_state("draining")
        self._stopping = True
        self._work_ready.set()
        fetch, gpu, join = loops
        await fetch
        self.scheduler.drain_all()
        await gpu
        if self._deliveries:
            await asyncio.wait(set(self._deliveries))
        join.cancel()
        await self.consumer.stop()
        self.health.drained = True
        log.info("drained", extra=fields(
            left_in_kafka=self.consumer.tracker.pending_count(),
            seconds=round(time.monotonic() - t0, 3)))

    async def _abort(self, loops: list[asyncio.Task[None]]) -> None:
        """Stop without finishing: commit only what is finished, then leave the group."""
        self._stopping = True
        self.health.draining = True
        for t in [*loops, *self._deliveries]:
            t.cancel()
        await asyncio.gather(*loops, *self._deliveries, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        self._set_state("failed")

    async def _close(self) -> None:
        consumer = getattr(self, "consumer", None)
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.consumer.stop()  # no-op when already stopped
        publisher = getattr(self, "publisher", None)
        if publisher is not None:
            with contextlib.suppress(Exception):
                await publisher.stop()
        for client in (getattr(self, "redis", None), getattr(self, "redis_cache", None)):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        await self.server.stop()

    # --- reporting ---------------------------------------------------------------------------

    def _set_state(self, state: WorkerState) -> None:
        if state != self.state:
            self.state = state
            log.info("state", extra=fields(state=state))
            hb = getattr(self, "heartbeats", None)
            if hb is not None:
                hb.poke()

    def _update_gauges(self) -> None:
        self.metrics.in_flight.set(self._pending())
        for tier, depth in self.scheduler.depths().items():
            self.metrics.queued.labels(tier).set(depth)

    def _heartbeat(self) -> Heartbeat:
        self.stats.in_flight = self._pending()
        first = self.runners.get(self.config.default_model)
        return heartbeat.build(
            worker=self.worker,
            role=self.settings.role,
            state=self.state,
            ready=self.health.ready(),
            models=[m.name for m in self.config.models],
            model_revision=first.revision if first is not None else None,
            snapshot=self.stats.snapshot(),
            interval_seconds=self.config.heartbeat_seconds,
            now=time.time(),
            started_at=self.started_at,
        )
