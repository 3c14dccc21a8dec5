"""The worker process: start-up order, signals, drain and shutdown. Built and run by `main`;
the parts come from `wiring` (the composition root), the loops from `dispatch`.

Start-up: HTTP probes → Redis + heartbeats (state loading) → models loaded and warmed up (in a
thread) → bucket, producer, stages, consumer → dispatch loops → ready once the consumer joined
the group. The consumer joins only after the models work, so a worker never holds partitions it
cannot serve.

Drain (SIGTERM, SIGINT or POST /drain): not ready; `Dispatcher.finish` (stop fetching, drop what
has not started, finish the batch in hand and its deliveries); the consumer commits what is
acknowledged and leaves the group; then exit 0 (after POST /drain too: see `_after_drain`).
A second signal exits at once (what is not committed is redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from imagegen_api import naming
from imagegen_api.messages import Heartbeat, WorkerState
from imagegen_api.specs import ImageModelSpec
from imagegen_api.workerconfig import WorkerConfig

from . import heartbeat, lifecycle, results, wiring
from .consumer import LEAVE_TIMEOUT_S, Consumer
from .content_credentials import ContentCredentials
from .dispatch import Dispatcher
from .faults import Faults
from .logs import fields
from .metrics import WorkerMetrics
from .results import ResultPublisher
from .safety import SafetyChecker
from .scheduler import Entry
from .server import Health, HttpServer
from .settings import Settings
from .stats import WorkerStats
from .storage import ObjectStore
from .work import Runner, Work

log = logging.getLogger(__name__)

T = TypeVar("T")
Loader = Callable[[str, ImageModelSpec], Runner]


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
        self.credentials: ContentCredentials | None = None  # output.contentCredentials
        self.checker: SafetyChecker | None = None  # safety.checker, loaded with the models
        self.scheduler = wiring.build_scheduler(config)
        self.abandoned_threads = False  # a model load was still running at exit
        self.exit = asyncio.Event()  # SIGTERM/SIGINT: drain, then exit
        self.drain = asyncio.Event()  # drain requested (a signal or POST /drain)
        self.server = HttpServer(self.health, self.metrics, port=settings.http_port,
                                 on_drain=self.request_drain, in_flight=self._pending)
        redis_url = config.cache.redis_url
        assert redis_url is not None  # Settings.resolve guarantees it
        self.redis: aioredis.Redis = wiring.records_client(redis_url)
        self.redis_cache: aioredis.Redis = wiring.cache_client(redis_url)
        # Job records: their own store, apart from the evictable cache (results.py).
        self.redis_jobs: aioredis.Redis = wiring.records_client(config.jobs.url(redis_url))
        self.heartbeats = heartbeat.Heartbeater(
            self.redis, naming.workers_key(config.namespace, config.pool), self.worker,
            config.heartbeat_seconds, self._heartbeat, self.metrics,
        )
        # Made by `_connect`, once the models work.
        self.publisher: ResultPublisher | None = None
        self.consumer: Consumer | None = None
        self.dispatcher: Dispatcher | None = None
        self._signals = 0

    # --- entry -------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        if self.faults.active:
            log.warning("fault injection is ON (test-only)", extra=fields(spec=self.faults))
        await self.server.start()
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
        if not self.drain.is_set():
            log.info("drain requested")
        self.health.draining = True  # not ready from now on; /drain reports it at once
        self.drain.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        log.info("signal received", extra=fields(signal=sig.name, count=self._signals))
        if self._signals > 1:
            log.warning("second signal: exiting now, without finishing the batch in hand")
            logging.shutdown()
            os._exit(1)  # what is not committed is redelivered to another worker
        self.drain.set()
        self.exit.set()

    # --- phases ------------------------------------------------------------------------------

    async def _serve(self) -> int:
        self._set_state("loading")
        if not await self._until_exit(self._load_models()):
            self.abandoned_threads = True
            return 0
        dispatcher = await self._until_exit(self._connect())
        if dispatcher is None:
            self.abandoned_threads = True
            return 0
        loops = dispatcher.start()
        join = asyncio.create_task(self._watch_join(), name="join")
        drain_wait = asyncio.create_task(self.drain.wait())
        failed_wait = asyncio.create_task(dispatcher.failed.wait())
        try:
            await asyncio.wait([drain_wait, failed_wait, *loops],
                               return_when=asyncio.FIRST_COMPLETED)
            crashed = [t for t in loops if t.done() and t.exception() is not None]
            if crashed or dispatcher.failed.is_set():
                for t in crashed:
                    log.error("loop failed", exc_info=t.exception(),
                              extra=fields(loop=t.get_name()))
                await dispatcher.abort()
                with contextlib.suppress(Exception):
                    await dispatcher.consumer.stop()  # commit what is acknowledged, leave
                self.health.draining = True
                self._set_state("failed")
                return 1
            await self._graceful_drain(dispatcher)
            if dispatcher.failed.is_set():
                return 1
            await self._after_drain()
            return 0
        finally:
            join.cancel()
            drain_wait.cancel()
            failed_wait.cancel()

    async def _after_drain(self) -> None:
        """What a drained worker does next: exit 0, however the drain came (a signal, or the
        preStop hook's POST /drain — the only caller `server` lets drain). Idling NotReady would
        hold a replica that serves nothing until someone deletes the pod."""
        if not self.exit.is_set():
            log.info("drained by POST /drain: exiting")

    async def _until_exit(self, coro: Awaitable[T]) -> T | None:
        """Await `coro` unless an exit is requested first; None then (a thread it started,
        such as a model load, cannot be interrupted and is abandoned)."""
        task = asyncio.ensure_future(coro)
        exit_wait = asyncio.create_task(self.exit.wait())
        await asyncio.wait([task, exit_wait], return_when=asyncio.FIRST_COMPLETED)
        exit_wait.cancel()
        if task.done():
            return task.result()  # re-raises a failure
        log.info("exit requested while starting")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return None

    async def _load_models(self) -> bool:
        if self.config.output.content_credentials is not None:
            # A key that cannot sign stops the worker here, before it takes any partition.
            self.credentials = await asyncio.to_thread(
                ContentCredentials.load, self.settings.content_credentials_dir)
            log.info("content credentials loaded", extra=fields(
                algorithm=self.credentials.algorithm, subject=self.credentials.subject))
        for entry in self.config.models:
            t0 = time.perf_counter()
            runner = await asyncio.to_thread(self.loader, entry.name, entry.spec)
            self.runners[entry.name] = runner
            log.info("model loaded", extra=fields(model=entry.name, revision=runner.revision,
                                                  device=runner.device,
                                                  seconds=round(time.perf_counter() - t0, 2)))
        await self._load_checker()
        self.health.models_loaded = True
        for name, runner in self.runners.items():
            t0 = time.perf_counter()
            await asyncio.to_thread(runner.warmup)
            log.info("model warmed up", extra=fields(
                model=name, seconds=round(time.perf_counter() - t0, 2)))
        self.health.warmed_up = True
        self.heartbeats.poke()
        return True

    async def _load_checker(self) -> None:
        """The pool's post-generation safety checker (safety.py), loaded and run once."""
        spec = self.config.safety.checker
        if spec is None or not self.config.safety.enabled:
            return
        t0 = time.perf_counter()
        checker = await asyncio.to_thread(SafetyChecker.load, spec, device=self.settings.device,
                                          cache_dir=self.settings.model_cache)
        await asyncio.to_thread(checker.warmup)
        self.checker = checker
        log.info("safety checker loaded", extra=fields(
            source=spec.source, revision=checker.revision, threshold=spec.threshold,
            seconds=round(time.perf_counter() - t0, 2)))

    async def _ensure_retention(self, store: ObjectStore) -> None:
        """The pool's S3 lifecycle rule (storage.retentionDays); never fatal."""
        s, ns, pool = self.config.storage, self.config.namespace, self.config.pool
        try:
            ok = await asyncio.to_thread(
                lifecycle.ensure_retention, store.client, s.bucket, ns, pool,
                naming.object_prefix(ns, pool), s.retention_days)
        except Exception as exc:
            log.log(logging.WARNING if s.retention_days else logging.INFO,
                    "storage lifecycle not set", extra=fields(error=repr(exc)))
            return
        if not ok:
            log.warning("storage lifecycle rule overwritten concurrently; the next worker to "
                        "start sets it again")

    async def _connect(self) -> Dispatcher:
        """Bucket, producer, stages, then the consumer: it joins the group last."""
        store = ObjectStore(self.config.storage, self.config.namespace, self.config.pool)
        await store.ensure_bucket()
        await self._ensure_retention(store)
        kafka = self.config.kafka
        assert kafka.bootstrap_servers is not None
        self.publisher = ResultPublisher(kafka.bootstrap_servers, results_topic=kafka.results_topic,
                                         dlq_topic=kafka.dlq_topic, client_id=self.worker)
        await self.publisher.start()
        consumer = Consumer(kafka, client_id=self.worker)
        self.consumer = consumer
        retention = await results.topic_retention_seconds(
            kafka.bootstrap_servers, list(kafka.tier_topics.values()))
        job_ttl = results.record_ttl(self.config.job_ttl_seconds, retention)
        if job_ttl != self.config.job_ttl_seconds:
            log.info("job records kept as long as the tier topics keep messages",
                     extra=fields(job_ttl_seconds=job_ttl, retention_seconds=retention))
        stages = wiring.build_stages(
            self.config, worker=self.worker, runners=self.runners, redis=self.redis,
            redis_cache=self.redis_cache, publisher=self.publisher, store=store,
            ack=consumer.ack, requeue=self._requeue, health=self.health, metrics=self.metrics,
            stats=self.stats, faults=self.faults, redis_jobs=self.redis_jobs,
            job_ttl_seconds=job_ttl, credentials=self.credentials, checker=self.checker)
        self.dispatcher = Dispatcher(config=self.config, consumer=consumer,
                                     scheduler=self.scheduler, stages=stages,
                                     health=self.health, metrics=self.metrics)
        await consumer.start()
        return self.dispatcher

    def _requeue(self, entry: Entry[Work]) -> None:
        if self.dispatcher is not None:
            self.dispatcher.requeue(entry)

    def _load_runner(self, name: str, spec: ImageModelSpec) -> Runner:
        from .pipelines import ModelRunner  # torch is imported only when a model is loaded

        runner: Runner = ModelRunner.load(name, spec, device=self.settings.device,
                                          cache_dir=self.settings.model_cache)
        return runner

    async def _watch_join(self) -> None:
        assert self.consumer is not None
        await self.consumer.joined.wait()
        self.health.joined = True
        if not self.health.draining:
            self._set_state("ready")
            log.info("ready", extra=fields(models=list(self.runners)))

    # --- drain and shutdown ------------------------------------------------------------------

    async def _graceful_drain(self, dispatcher: Dispatcher) -> None:
        t0 = time.monotonic()
        self.health.draining = True
        self._set_state("draining")
        await dispatcher.finish()
        await dispatcher.consumer.stop()
        self.health.drained = True
        log.info("drained", extra=fields(
            left_in_kafka=dispatcher.consumer.pending_count(),
            seconds=round(time.monotonic() - t0, 3)))

    async def _close(self) -> None:
        """Release every client; each step bounded, so an outage cannot hold the exit."""
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.close()  # no-op when already stopped
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(LEAVE_TIMEOUT_S):
                    await self.publisher.stop()
        for client in (self.redis, self.redis_cache, self.redis_jobs):
            with contextlib.suppress(Exception):
                await client.aclose()
        await self.server.stop()

    # --- reporting ---------------------------------------------------------------------------

    def _pending(self) -> int:
        return self.consumer.pending_count() if self.consumer is not None else 0

    def _set_state(self, state: WorkerState) -> None:
        if state != self.state:
            self.state = state
            log.info("state", extra=fields(state=state))
            self.heartbeats.poke()

    def _heartbeat(self) -> Heartbeat:
        self.stats.in_flight = self._pending()
        first = self.runners.get(self.config.default_model)
        hits, misses = heartbeat.cache_counts(self.metrics)
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
            cache_hits=hits,
            cache_misses=misses,
            blocked_images=int(self.metrics.registry.get_sample_value(
                "imagegen_safety_blocked_images_total") or 0),
            loras=[f"{m.name}/{a.name}" for m in self.config.models if m.name in self.runners
                   for a in m.spec.loras],
        )
