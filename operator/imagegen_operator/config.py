"""The operator's own settings, from its environment (set by the chart / kustomize / dev demo)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from imagegen_api import naming

from .builders.context import OperatorDefaults

ENV_STANDALONE = "IMAGEGEN_OPERATOR_STANDALONE"
ENV_PEERING = "IMAGEGEN_OPERATOR_PEERING"
ENV_NAMESPACES = "IMAGEGEN_WATCH_NAMESPACES"
# The port the pod's probes hit (/healthz); the same variable the workers use for theirs.
ENV_HEALTH_PORT = naming.ENV_HTTP_PORT
ENV_METRICS_PORT = "IMAGEGEN_METRICS_PORT"
ENV_LOG_LEVEL = "IMAGEGEN_LOG_LEVEL"
ENV_WORKER_SERVICE_ACCOUNT = "IMAGEGEN_WORKER_SERVICE_ACCOUNT"
ENV_S3_CREDENTIALS_SECRET = "IMAGEGEN_S3_CREDENTIALS_SECRET"
ENV_DEFAULT_WORKER_IMAGE = "IMAGEGEN_DEFAULT_WORKER_IMAGE"
ENV_MODEL_POLL_SECONDS = "IMAGEGEN_MODEL_POLL_SECONDS"
ENV_STALL_SECONDS = "IMAGEGEN_STALL_SECONDS"
ENV_ALLOWED_IMAGES = "IMAGEGEN_ALLOWED_IMAGES"


@dataclass(frozen=True)
class OperatorConfig:
    defaults: OperatorDefaults
    # Empty: watch the whole cluster.
    namespaces: tuple[str, ...]
    standalone: bool
    peering_name: str
    health_port: int
    metrics_port: int
    model_poll_seconds: float
    log_level: str
    # A backlog not moving this long while workers are ready is reported (PartitionStalled).
    stall_seconds: float = 120.0
    # Worker image prefixes pools may run (registries or repositories); empty: any image. A pool
    # whose image matches none is Degraded (ImageNotAllowed) and gets no workers.
    allowed_images: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        e = os.environ if env is None else env

        def opt(name: str) -> str | None:
            return (e.get(name) or "").strip() or None

        def port(name: str, default: int) -> int:
            text = opt(name) or str(default)
            if not text.isdigit() or not 0 <= int(text) < 65536:
                raise ValueError(f"{name} must be a port number (0-65535), got {text!r}")
            return int(text)

        return cls(
            defaults=OperatorDefaults(
                kafka_bootstrap=opt(naming.ENV_KAFKA_BOOTSTRAP),
                redis_url=opt(naming.ENV_REDIS_URL),
                s3_endpoint=opt(naming.ENV_S3_ENDPOINT),
                s3_credentials_secret=opt(ENV_S3_CREDENTIALS_SECRET) or "imagegen-s3",
                worker_image=opt(ENV_DEFAULT_WORKER_IMAGE),
                worker_service_account=opt(ENV_WORKER_SERVICE_ACCOUNT),
            ),
            namespaces=tuple(n.strip() for n in (opt(ENV_NAMESPACES) or "").split(",")
                             if n.strip()),
            standalone=(opt(ENV_STANDALONE) or "").lower() in ("1", "true", "yes"),
            peering_name=opt(ENV_PEERING) or "imagegen-operator",
            health_port=port(ENV_HEALTH_PORT, 8080),
            metrics_port=port(ENV_METRICS_PORT, 9090),
            model_poll_seconds=float(opt(ENV_MODEL_POLL_SECONDS) or 10),
            log_level=(opt(ENV_LOG_LEVEL) or "INFO").upper(),
            stall_seconds=float(opt(ENV_STALL_SECONDS) or 120),
            allowed_images=tuple(p.strip() for p in (opt(ENV_ALLOWED_IMAGES) or "").split(",")
                                 if p.strip()),
        )
