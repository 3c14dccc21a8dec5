"""The composition root: how the worker's parts are built and connected. Used by `app` (the
process) and by the integration tests, which wire the same stages on the real stack with a
stand-in model, so that what they test is what runs.

Redis clients: one for job records and heartbeats (short timeouts, one retry, a breaker in
front: `breaker`), one for the image cache (no retries, its own breaker in `cache`). A frozen or
blackholed Redis then costs a request at most about two seconds once per breaker pause, never the
client library's default retries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from imagegen_api.workerconfig import WorkerConfig
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .batchrun import BatchRunner, Requeue
from .breaker import Breaker, BreakerJobRecords
from .cache import ImageCache
from .claims import AnswerClaims
from .content_credentials import ContentCredentials
from .delivery import Answers
from .faults import Faults
from .intake import Intake
from .metrics import WorkerMetrics
from .outage import Outages
from .respond import Responder
from .results import JobRecords, ResultPublisher
from .safety import SafetyChecker
from .scheduler import TierScheduler
from .server import Health
from .stats import WorkerStats
from .storage import ObjectStore
from .work import MessageRef, Runner, Work

RECORDS_TIMEOUT_S = 1.0  # one Redis round trip of the job records or a heartbeat
RECORDS_CONNECT_TIMEOUT_S = 0.5
CACHE_TIMEOUT_S = 1.0


def records_client(url: str) -> aioredis.Redis:
    """Redis for job records and heartbeats: short timeouts and one retry."""
    return aioredis.from_url(url, socket_connect_timeout=RECORDS_CONNECT_TIMEOUT_S,
                             socket_timeout=RECORDS_TIMEOUT_S, retry=Retry(NoBackoff(), 1),
                             health_check_interval=15)


def cache_client(url: str) -> aioredis.Redis:
    """Redis for the image cache: fails fast, no retries (the cache has a breaker)."""
    return aioredis.from_url(url, socket_connect_timeout=RECORDS_CONNECT_TIMEOUT_S,
                             socket_timeout=CACHE_TIMEOUT_S, retry=Retry(NoBackoff(), 0))


def build_scheduler(config: WorkerConfig) -> TierScheduler[Work]:
    return TierScheduler(config.kafka.tiers, max_batch_size=config.batching.max_batch_size,
                         max_wait_ms=config.batching.max_wait_ms)


@dataclass
class Stages:
    """The request path of one worker: intake → (scheduler) → batches → answers."""

    records: JobRecords
    cache: ImageCache
    outages: Outages
    responder: Responder
    answers: Answers
    intake: Intake
    batches: BatchRunner


def build_stages(config: WorkerConfig, *, worker: str, runners: Mapping[str, Runner],
                 redis: aioredis.Redis, redis_cache: aioredis.Redis | None,
                 publisher: ResultPublisher, store: ObjectStore,
                 ack: Callable[[MessageRef], None], requeue: Requeue, health: Health,
                 metrics: WorkerMetrics, stats: WorkerStats, faults: Faults,
                 records_breaker: Breaker | None = None, redis_jobs: aioredis.Redis | None = None,
                 job_ttl_seconds: int | None = None,
                 credentials: ContentCredentials | None = None,
                 checker: SafetyChecker | None = None) -> Stages:
    """Wire the stages. `redis_cache` None (or a pool with the cache off) runs without cache.
    Job records go to `redis_jobs` (the job store, results.py; default `redis`) and live
    `job_ttl_seconds` (default config.job_ttl_seconds; `app` raises it to the topics' retention).
    A batch and its upload hold the request's lease for at most the group's max poll interval."""
    records = BreakerJobRecords(redis_jobs or redis, namespace=config.namespace, pool=config.pool,
                                ttl_seconds=job_ttl_seconds or config.job_ttl_seconds,
                                worker=worker,
                                lease_seconds=config.kafka.max_poll_interval_ms / 1000,
                                breaker=records_breaker or Breaker(
                                    "job records", probe=(redis_jobs or redis).ping))
    cache = ImageCache(redis_cache if config.cache.enabled else None,
                       namespace=config.namespace, pool=config.pool, bucket=store.bucket,
                       endpoint=store.endpoint, ttl_seconds=config.cache.ttl_seconds,
                       metrics=metrics)
    outages = Outages(health)
    claims = AnswerClaims(store, metrics)
    responder = Responder(records=records, publisher=publisher, store=store, claims=claims,
                          done=ack, metrics=metrics, stats=stats, worker=worker)
    answers = Answers(responder=responder, outages=outages, ack=ack, metrics=metrics,
                      worker=worker, faults=faults)
    tier_of = {topic: tier for tier, topic in config.kafka.tier_topics.items()}
    intake = Intake(config=config, runners=runners, tier_of=tier_of, records=records,
                    claims=claims, cache=cache, answers=answers, metrics=metrics, worker=worker,
                    fetch_object=store.read_head)
    batches = BatchRunner(config=config, runners=runners, records=records, cache=cache,
                          store=store, answers=answers, outages=outages, intake=intake,
                          metrics=metrics, stats=stats, faults=faults, requeue=requeue,
                          credentials=credentials, checker=checker)
    return Stages(records, cache, outages, responder, answers, intake, batches)
