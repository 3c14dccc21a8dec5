"""Pool spec + model specs → the worker.json every worker of the pool loads."""

from __future__ import annotations

import hashlib

from imagegen_api import naming
from imagegen_api.workerconfig import (
    CacheSettings,
    KafkaSettings,
    ModelEntry,
    StorageSettings,
    WorkerConfig,
)

from .context import PoolContext


def worker_config(ctx: PoolContext) -> WorkerConfig:
    """Connection strings are left out when they come from a Secret/ConfigMap reference or the
    operator's defaults: the worker then reads them from its environment (set by the builder)."""
    spec, ns, pool = ctx.spec, ctx.namespace, ctx.name
    # A batch of the largest size must finish well inside the poll interval limit.
    max_poll_ms = max(600_000, spec.worker.termination_grace_period_seconds * 1000)
    return WorkerConfig(
        namespace=ns,
        pool=pool,
        models=[ModelEntry(name=name, spec=ctx.models[name]) for name in spec.models],
        kafka=KafkaSettings(
            bootstrap_servers=spec.queue.bootstrap_servers,
            group=naming.consumer_group(ns, pool),
            tier_topics={t.name: naming.tier_topic(ns, pool, t.name) for t in spec.queue.tiers},
            results_topic=naming.results_topic(ns, pool),
            dlq_topic=naming.dlq_topic(ns, pool),
            tiers=list(spec.queue.tiers),
            max_attempts=spec.queue.max_attempts,
            max_poll_interval_ms=max_poll_ms,
        ),
        batching=spec.batching,
        cache=CacheSettings(
            enabled=spec.cache.enabled,
            redis_url=spec.cache.redis_url,
            ttl_seconds=spec.cache.ttl_seconds,
        ),
        storage=StorageSettings(
            endpoint=spec.storage.endpoint,
            bucket=spec.storage.bucket,
            region=spec.storage.region,
            url_ttl_seconds=spec.storage.url_ttl_seconds,
            retention_days=spec.storage.retention_days,
        ),
        safety=spec.safety,
        output=spec.output,
        heartbeat_seconds=spec.worker.heartbeat_seconds,
        job_ttl_seconds=spec.job_ttl_seconds,
    )


def config_hash(text: str) -> str:
    """A short digest of rendered text: on the pod template a config change rolls the workers;
    on a prefetch Job it names the model spec downloaded."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
