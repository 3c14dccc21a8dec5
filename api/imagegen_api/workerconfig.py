"""The worker's configuration: rendered by the operator into the pool's ConfigMap (worker.json)
and loaded by every worker at start. Both sides import this schema, so what the operator writes
is what the worker reads. Connection secrets never live here: they come from environment
variables set from Secrets (see naming.ENV_*); a field left None means "read the env var".
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field

from .base import KubeModel
from .specs import (
    BatchingSpec,
    ImageModelSpec,
    OutputSpec,
    SafetySpec,
    Tier,
)


class ModelEntry(KubeModel):
    name: str
    spec: ImageModelSpec


class KafkaSettings(KubeModel):
    bootstrap_servers: str | None = None
    group: str
    tier_topics: dict[str, str]  # tier name -> topic
    results_topic: str
    dlq_topic: str
    tiers: list[Tier]
    max_attempts: int = 3
    # Must exceed the slowest batch: a worker over it is expelled from the group.
    max_poll_interval_ms: int = 600_000


class CacheSettings(KubeModel):
    enabled: bool = True
    redis_url: str | None = None
    ttl_seconds: int = 86400


class JobStoreSettings(KubeModel):
    """Where job records (the idempotency memory) live: never among the image cache's keys. A
    cache may be flushed or evicted; a record that vanishes turns a redelivery into a second
    generation with other images. Default: the cache's Redis instance, database `db` (a FLUSHDB
    or key policy of the cache's database leaves records alone). For records that must survive
    memory pressure, IMAGEGEN_JOBS_REDIS_URL names their own instance, run with
    `maxmemory-policy noeviction` (docs/operations.md, "Job records")."""

    redis_url: str | None = None  # None: $IMAGEGEN_JOBS_REDIS_URL, else the cache's URL + db
    db: int = Field(1, ge=0, le=15)

    def url(self, cache_url: str) -> str:
        """The job store's URL: `redis_url`, else `cache_url` with its database set to `db`."""
        if self.redis_url:
            return self.redis_url
        parts = urlsplit(cache_url)
        if parts.scheme == "unix":  # unix:///path/redis.sock?db=N
            query = [kv for kv in parts.query.split("&") if kv and not kv.startswith("db=")]
            return f"unix://{parts.path}?" + "&".join([*query, f"db={self.db}"])
        return urlunsplit(parts._replace(path=f"/{self.db}"))


class StorageSettings(KubeModel):
    endpoint: str | None = None
    bucket: str = "imagegen"
    region: str = "us-east-1"
    url_ttl_seconds: int = 3600
    retention_days: int | None = None  # S3 lifecycle on the pool's prefix; None: none


class WorkerConfig(KubeModel):
    namespace: str
    pool: str
    models: list[ModelEntry] = Field(min_length=1)
    kafka: KafkaSettings
    batching: BatchingSpec = BatchingSpec()
    cache: CacheSettings = CacheSettings()
    jobs: JobStoreSettings = JobStoreSettings()
    storage: StorageSettings = StorageSettings()
    safety: SafetySpec = SafetySpec()
    output: OutputSpec = OutputSpec()
    heartbeat_seconds: int = 5
    job_ttl_seconds: int = 86400

    @property
    def default_model(self) -> str:
        return self.models[0].name

    def model(self, name: str) -> ImageModelSpec | None:
        for entry in self.models:
            if entry.name == name:
                return entry.spec
        return None

    def dump_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2)

    @classmethod
    def load(cls, path: str | Path) -> WorkerConfig:
        return cls.model_validate_json(Path(path).read_text())
