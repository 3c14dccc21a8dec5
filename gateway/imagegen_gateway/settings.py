"""The gateway's configuration: the pool's facts come from the same worker.json the operator
renders for the workers (imagegen_api.workerconfig.WorkerConfig: namespace, pool, models and
their limits, tiers, topics, job store), connection endpoints from the same environment variables
(naming.ENV_*), and the gateway's own knobs from an optional JSON file ($IMAGEGEN_GATEWAY_CONFIG)
with environment overrides. Read once at start by `main`; the app gets the parsed object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from imagegen_api import naming
from imagegen_api.workerconfig import WorkerConfig
from pydantic import BaseModel, ConfigDict, Field


class GatewaySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Path of the pool's rendered worker.json (the workers' config: models, tiers, topics).
    worker_config: str
    # Path of the API keys file (a mounted Secret; see keys.py for its format).
    keys_file: str
    # Kafka bootstrap servers; None: the worker config's, else $IMAGEGEN_KAFKA_BOOTSTRAP.
    kafka_bootstrap: str | None = None
    # The pool's Redis (rate limits; job records live in its job database unless jobs_redis_url).
    redis_url: str | None = None
    # The job store when it is its own instance ($IMAGEGEN_JOBS_REDIS_URL).
    jobs_redis_url: str | None = None
    host: str = "0.0.0.0"
    port: int = Field(naming.GATEWAY_HTTP_PORT, ge=1, le=65535)
    # How long POST /v1/images/generations waits for the result before answering 504.
    sync_timeout_seconds: float = Field(120.0, gt=0, le=3600)
    # Largest request body accepted (413 above it): the request message's own limit.
    max_body_bytes: int = Field(naming.MAX_REQUEST_BYTES, ge=1024, le=naming.MAX_REQUEST_BYTES)
    # Default token bucket of a key that names none: refill per second and burst size.
    rate_per_second: float = Field(5.0, gt=0)
    burst: int = Field(20, ge=1)
    # How long the gateway's "accepted" mark lives (it answers `queued` until a job record).
    accepted_ttl_seconds: int = Field(86400, ge=60)
    # Load shedding (shedding.py): refuse with 503 when backlog / throughput exceeds this.
    max_queue_seconds: float = Field(300.0, gt=0)
    backlog_refresh_seconds: float = Field(2.0, gt=0, le=60)
    # Webhooks (webhooks.py, delivery.py): spec.gateway.webhooks.
    webhook_allowed_hosts: list[str] = Field(default_factory=list)
    webhook_max_attempts: int = Field(5, ge=1, le=20)
    webhook_backoff_seconds: float = Field(2.0, gt=0)
    webhook_backoff_max_seconds: float = Field(300.0, gt=0)
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        """File ($IMAGEGEN_GATEWAY_CONFIG, JSON) first, then the environment over it."""
        env = os.environ if environ is None else environ
        data: dict[str, object] = {}
        path = env.get(naming.ENV_GATEWAY_CONFIG)
        if path:
            data.update(json.loads(Path(path).read_text()))
        inline = env.get(naming.ENV_GATEWAY_SETTINGS)
        if inline:  # the operator's rendering of spec.gateway (builders/gateway.py)
            data.update(json.loads(inline))
        overrides = {
            "worker_config": env.get(naming.ENV_WORKER_CONFIG),
            "keys_file": env.get(naming.ENV_GATEWAY_KEYS),
            "kafka_bootstrap": env.get(naming.ENV_KAFKA_BOOTSTRAP),
            "redis_url": env.get(naming.ENV_REDIS_URL),
            "jobs_redis_url": env.get(naming.ENV_JOBS_REDIS_URL),
            "port": env.get(naming.ENV_HTTP_PORT),
        }
        data.update({k: v for k, v in overrides.items() if v})
        return cls.model_validate(data)

    def load_pool(self) -> WorkerConfig:
        return WorkerConfig.load(self.worker_config)

    def bootstrap(self, pool: WorkerConfig) -> str:
        servers = self.kafka_bootstrap or pool.kafka.bootstrap_servers
        if not servers:
            raise ValueError(f"no Kafka bootstrap servers: set {naming.ENV_KAFKA_BOOTSTRAP}")
        return servers

    def cache_redis(self, pool: WorkerConfig) -> str:
        url = self.redis_url or pool.cache.redis_url
        if not url:
            raise ValueError(f"no Redis URL: set {naming.ENV_REDIS_URL}")
        return url

    def jobs_redis(self, pool: WorkerConfig) -> str:
        """Where the workers keep job records (workerconfig.JobStoreSettings)."""
        return self.jobs_redis_url or pool.jobs.url(self.cache_redis(pool))
