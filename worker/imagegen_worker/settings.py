"""Process settings of one worker, read once from the environment by `main` and handed to `app`.

The pool-wide configuration (models, topics, tiers, limits) lives in the WorkerConfig file the
operator renders; this object holds what differs per pod (name, role, port, device) and the
connection endpoints that fill the config's `None` fields (they come from Secrets as env vars).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from imagegen_api import naming
from imagegen_api.workerconfig import WorkerConfig

ENV_DEVICE = "IMAGEGEN_DEVICE"
ENV_LOG_LEVEL = "IMAGEGEN_LOG_LEVEL"
ENV_FAULT_INJECT = "IMAGEGEN_FAULT_INJECT"


@dataclass(frozen=True)
class Settings:
    # Path of the rendered worker.json (IMAGEGEN_WORKER_CONFIG).
    config_path: Path
    # Port of /healthz (/livez), /readyz, /metrics and /drain (IMAGEGEN_HTTP_PORT).
    http_port: int
    # This worker's name in heartbeats and results (POD_NAME, else the host name).
    pod_name: str
    # Namespace of the pod (POD_NAMESPACE); the config's namespace wins for naming.
    pod_namespace: str | None
    # warm | cold (IMAGEGEN_ROLE); reported in heartbeats.
    role: str | None
    # Kafka bootstrap servers when the config leaves them unset (IMAGEGEN_KAFKA_BOOTSTRAP).
    kafka_bootstrap: str | None
    # Redis URL for cache, job records and heartbeats when the config leaves it unset.
    redis_url: str | None
    # S3 endpoint when the config leaves it unset (IMAGEGEN_S3_ENDPOINT); None: AWS itself.
    s3_endpoint: str | None
    # Where weights are cached or prefetched (IMAGEGEN_MODEL_CACHE).
    model_cache: str | None
    # torch device override, e.g. "cpu" or "cuda:1" (IMAGEGEN_DEVICE); None: the runner decides.
    device: str | None
    # Log level name (IMAGEGEN_LOG_LEVEL), INFO by default.
    log_level: str
    # Test-only fault hooks (IMAGEGEN_FAULT_INJECT); see faults.py. Empty in production.
    fault_inject: str
    # Job records' own Redis (IMAGEGEN_JOBS_REDIS_URL); None: the cache's Redis, database
    # jobs.db (workerconfig.JobStoreSettings).
    jobs_redis_url: str | None = None
    # The contentCredentials Secret's mount (IMAGEGEN_CONTENT_CREDENTIALS_DIR); read only when
    # the pool's output.contentCredentials is set.
    content_credentials_dir: Path = Path(naming.CONTENT_CREDENTIALS_DIR)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env

        def opt(name: str) -> str | None:
            value = e.get(name, "").strip()
            return value or None

        config = opt(naming.ENV_WORKER_CONFIG) or str(
            Path(naming.WORKER_CONFIG_DIR) / naming.WORKER_CONFIG_FILE
        )
        port_text = opt(naming.ENV_HTTP_PORT) or str(naming.WORKER_HTTP_PORT)
        try:
            port = int(port_text)
        except ValueError as exc:
            raise ValueError(
                f"{naming.ENV_HTTP_PORT} must be an integer, got {port_text!r}") from exc
        if not 0 <= port <= 65535:
            raise ValueError(f"{naming.ENV_HTTP_PORT} must be a port number, got {port}")
        return cls(
            config_path=Path(config),
            http_port=port,
            pod_name=opt(naming.ENV_POD_NAME) or socket.gethostname(),
            pod_namespace=opt(naming.ENV_POD_NAMESPACE),
            role=opt(naming.ENV_ROLE),
            kafka_bootstrap=opt(naming.ENV_KAFKA_BOOTSTRAP),
            redis_url=opt(naming.ENV_REDIS_URL),
            s3_endpoint=opt(naming.ENV_S3_ENDPOINT),
            model_cache=opt(naming.ENV_MODEL_CACHE),
            device=opt(ENV_DEVICE),
            log_level=(opt(ENV_LOG_LEVEL) or "INFO").upper(),
            fault_inject=opt(ENV_FAULT_INJECT) or "",
            jobs_redis_url=opt(naming.ENV_JOBS_REDIS_URL),
            content_credentials_dir=Path(opt(naming.ENV_CONTENT_CREDENTIALS_DIR)
                                         or naming.CONTENT_CREDENTIALS_DIR),
        )

    def load_config(self) -> WorkerConfig:
        """The worker config with env endpoints filled into the fields it leaves None."""
        return self.resolve(WorkerConfig.load(self.config_path))

    def resolve(self, config: WorkerConfig) -> WorkerConfig:
        """Fill unset endpoints from these settings; fail clearly when one is still missing."""
        kafka = config.kafka
        if kafka.bootstrap_servers is None:
            if not self.kafka_bootstrap:
                raise ValueError(
                    f"kafka.bootstrapServers is unset in {self.config_path} and "
                    f"{naming.ENV_KAFKA_BOOTSTRAP} is empty"
                )
            kafka = kafka.model_copy(update={"bootstrap_servers": self.kafka_bootstrap})
        cache = config.cache
        if cache.redis_url is None and self.redis_url:
            cache = cache.model_copy(update={"redis_url": self.redis_url})
        if cache.redis_url is None:
            raise ValueError(
                f"cache.redisUrl is unset in {self.config_path} and {naming.ENV_REDIS_URL} is "
                "empty: job records and heartbeats need Redis"
            )
        storage = config.storage
        if storage.endpoint is None and self.s3_endpoint:
            storage = storage.model_copy(update={"endpoint": self.s3_endpoint})
        jobs = config.jobs
        if jobs.redis_url is None and self.jobs_redis_url:
            jobs = jobs.model_copy(update={"redis_url": self.jobs_redis_url})
        return config.model_copy(update={"kafka": kafka, "cache": cache, "storage": storage,
                                         "jobs": jobs})
