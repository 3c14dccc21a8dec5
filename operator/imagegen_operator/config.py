"""The operator's own settings, from its environment (set by the chart / kustomize / dev demo)."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from imagegen_api import naming

from .builders.context import OperatorDefaults
from .leader import LeaseTimings

# "1"/"true": one replica, no leader election (dev, tests); the CLI's --no-leader-election.
ENV_STANDALONE = "IMAGEGEN_OPERATOR_STANDALONE"
# Leader election (leader.py): the Lease's name and namespace, this replica's identity, timings.
ENV_LEASE_NAME = "IMAGEGEN_LEASE_NAME"
ENV_LEASE_NAMESPACE = "IMAGEGEN_LEASE_NAMESPACE"
ENV_LEASE_DURATION = "IMAGEGEN_LEASE_DURATION_SECONDS"
ENV_LEASE_RENEW_DEADLINE = "IMAGEGEN_LEASE_RENEW_DEADLINE_SECONDS"
ENV_LEASE_RETRY_PERIOD = "IMAGEGEN_LEASE_RETRY_PERIOD_SECONDS"
ENV_POD_NAME = "POD_NAME"
ENV_POD_NAMESPACE = "POD_NAMESPACE"
ENV_NAMESPACES = "IMAGEGEN_WATCH_NAMESPACES"
# The port the pod's probes hit (/healthz); the same variable the workers use for theirs.
ENV_HEALTH_PORT = naming.ENV_HTTP_PORT
ENV_METRICS_PORT = "IMAGEGEN_METRICS_PORT"
ENV_LOG_LEVEL = "IMAGEGEN_LOG_LEVEL"
ENV_WORKER_SERVICE_ACCOUNT = "IMAGEGEN_WORKER_SERVICE_ACCOUNT"
ENV_S3_CREDENTIALS_SECRET = "IMAGEGEN_S3_CREDENTIALS_SECRET"
# A Secret in each pool namespace holding the default Redis URL (workers read it by secretKeyRef).
ENV_REDIS_URL_SECRET = "IMAGEGEN_REDIS_URL_SECRET"
ENV_REDIS_URL_SECRET_KEY = "IMAGEGEN_REDIS_URL_SECRET_KEY"
ENV_DEFAULT_WORKER_IMAGE = "IMAGEGEN_DEFAULT_WORKER_IMAGE"
ENV_MODEL_POLL_SECONDS = "IMAGEGEN_MODEL_POLL_SECONDS"
ENV_STALL_SECONDS = "IMAGEGEN_STALL_SECONDS"
ENV_ALLOWED_IMAGES = "IMAGEGEN_ALLOWED_IMAGES"


@dataclass(frozen=True)
class LeaseSettings:
    """Where the leader-election Lease lives and who this replica is."""

    name: str
    namespace: str
    # holderIdentity: the pod name (unique per replica), else host name + a random suffix.
    identity: str
    timings: LeaseTimings


@dataclass(frozen=True)
class OperatorConfig:
    defaults: OperatorDefaults
    # Empty: watch the whole cluster.
    namespaces: tuple[str, ...]
    # True: act at once, no Lease (one replica only). False: acquire `lease` first.
    standalone: bool
    lease: LeaseSettings
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

        standalone = (opt(ENV_STANDALONE) or "").lower() in ("1", "true", "yes")
        lease = _lease(opt)
        if not standalone and not lease.namespace:
            raise ValueError(f"{ENV_LEASE_NAMESPACE} (or {ENV_POD_NAMESPACE}) must name the "
                             "namespace of the leader-election Lease; or set "
                             f"{ENV_STANDALONE}=1 to run a single replica without one")
        return cls(
            defaults=OperatorDefaults(
                kafka_bootstrap=opt(naming.ENV_KAFKA_BOOTSTRAP),
                redis_url=opt(naming.ENV_REDIS_URL),
                redis_url_secret=opt(ENV_REDIS_URL_SECRET),
                redis_url_secret_key=opt(ENV_REDIS_URL_SECRET_KEY) or "url",
                s3_endpoint=opt(naming.ENV_S3_ENDPOINT),
                s3_credentials_secret=opt(ENV_S3_CREDENTIALS_SECRET) or "imagegen-s3",
                worker_image=opt(ENV_DEFAULT_WORKER_IMAGE),
                worker_service_account=opt(ENV_WORKER_SERVICE_ACCOUNT),
            ),
            namespaces=tuple(n.strip() for n in (opt(ENV_NAMESPACES) or "").split(",")
                             if n.strip()),
            standalone=standalone,
            lease=lease,
            health_port=port(ENV_HEALTH_PORT, 8080),
            metrics_port=port(ENV_METRICS_PORT, 9090),
            model_poll_seconds=float(opt(ENV_MODEL_POLL_SECONDS) or 10),
            log_level=(opt(ENV_LOG_LEVEL) or "INFO").upper(),
            stall_seconds=float(opt(ENV_STALL_SECONDS) or 120),
            allowed_images=tuple(p.strip() for p in (opt(ENV_ALLOWED_IMAGES) or "").split(",")
                                 if p.strip()),
        )


def _seconds(opt: Callable[[str], str | None], name: str, default: float) -> float:
    text = opt(name)
    try:
        value = float(text) if text is not None else default
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {text!r}")
    return value


def _lease(opt: Callable[[str], str | None]) -> LeaseSettings:
    timings = LeaseTimings(
        lease_duration=_seconds(opt, ENV_LEASE_DURATION, 15),
        renew_deadline=_seconds(opt, ENV_LEASE_RENEW_DEADLINE, 10),
        retry_period=_seconds(opt, ENV_LEASE_RETRY_PERIOD, 2))
    timings.validate()
    identity = opt(ENV_POD_NAME) or f"{socket.gethostname()}-{secrets.token_hex(4)}"
    return LeaseSettings(name=opt(ENV_LEASE_NAME) or "imagegen-operator",
                         # empty: refused by from_env unless standalone
                         namespace=opt(ENV_LEASE_NAMESPACE) or opt(ENV_POD_NAMESPACE) or "",
                         identity=identity, timings=timings)
