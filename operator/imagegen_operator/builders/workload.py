"""Pool → its Kubernetes children: worker ConfigMap, warm/cold Deployments, metrics Service, PDB.

Pure: dicts in the shape server-side apply takes. Every child carries the pool's selector-safe
labels and a controller owner reference, so deleting the pool removes everything.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from imagegen_api import naming
from imagegen_api.specs import Toleration

from . import endpoints
from .context import PoolContext, env_from
from .workerconfig import config_hash, worker_config

Manifest = dict[str, Any]

WORKER_UID = 10001
# Warm workers keep models loaded: never take one down before its replacement is Ready.
ROLLING = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


class BuildError(ValueError):
    """The pool cannot be rendered as specified; the message names the field."""


def _meta(ctx: PoolContext, name: str, component: str) -> Manifest:
    return {
        "name": name,
        "namespace": ctx.namespace,
        "labels": {**naming.pool_labels(ctx.name), naming.LABEL_COMPONENT: component},
        "ownerReferences": [ctx.owner.reference()],
    }


def config_map(ctx: PoolContext) -> Manifest:
    text = worker_config(ctx).dump_json()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(ctx, naming.config_map_name(ctx.name), "worker-config"),
        "data": {naming.WORKER_CONFIG_FILE: text},
    }


def cache_claim(ctx: PoolContext) -> str | None:
    """The one PVC mounted at the model cache root: the models' prefetch claim or pvc:// claim,
    and the pvc:// claim of the safety checker (spec.safety.checker.source)."""
    claims: set[str] = set()
    for name in ctx.spec.models:
        model = ctx.models[name]
        if model.prefetch is not None:
            claims.add(model.prefetch.claim_name)
        if model.source.startswith("pvc://"):
            claims.add(model.source.removeprefix("pvc://").split("/", 1)[0])
    where, what = "spec.models", "the models use"
    checker = ctx.spec.safety.checker
    if checker is not None and checker.source.startswith("pvc://"):
        claims.add(checker.source.removeprefix("pvc://").split("/", 1)[0])
        where, what = "spec.models, spec.safety.checker.source", "the models and the checker use"
    if len(claims) > 1:
        raise BuildError(
            f"{where}: {what} {len(claims)} different cache claims "
            f"({', '.join(sorted(claims))}); a pool mounts one claim at {naming.MODEL_CACHE_DIR}"
        )
    return next(iter(claims), None)


def _tolerations(items: list[Toleration]) -> list[Manifest]:
    return [t.model_dump(by_alias=True, exclude_none=True) for t in items]


def _env(ctx: PoolContext, role: str) -> list[Manifest]:
    spec, d = ctx.spec, ctx.defaults
    env: list[Manifest] = [
        {"name": naming.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": naming.ENV_POD_NAMESPACE,
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": naming.ENV_ROLE, "value": role},
        {
            "name": naming.ENV_WORKER_CONFIG,
            "value": f"{naming.WORKER_CONFIG_DIR}/{naming.WORKER_CONFIG_FILE}",
        },
        {"name": naming.ENV_HTTP_PORT, "value": str(naming.WORKER_HTTP_PORT)},
        {"name": naming.ENV_MODEL_CACHE, "value": naming.MODEL_CACHE_DIR},
        {"name": "HOME", "value": "/tmp"},
    ]
    env.extend(connection_env(ctx))
    endpoint = spec.storage.endpoint or d.s3_endpoint
    if endpoint and spec.storage.endpoint is None:
        env.append({"name": naming.ENV_S3_ENDPOINT, "value": endpoint})
    secret = spec.storage.credentials_secret or d.s3_credentials_secret
    if secret:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    env.extend({"name": e.name, "value": e.value} for e in spec.worker.env)
    return env


def connection_env(ctx: PoolContext) -> list[Manifest]:
    """Kafka and Redis for a pod of the pool (workers, gateway). A literal from the spec is in
    the ConfigMap already; a reference or the operator's default goes into env."""
    spec, d = ctx.spec, ctx.defaults
    env: list[Manifest] = []
    for env_name, ep in ((naming.ENV_KAFKA_BOOTSTRAP, endpoints.kafka(spec, d)),
                         (naming.ENV_REDIS_URL, endpoints.redis(spec, d))):
        if ep.ref is not None:
            env.append(env_from(env_name, ep.ref))
        elif ep.source == "default":
            env.append(_default_env(env_name, ep.default, ctx))
    return env


def _default_env(name: str, value: str | None, ctx: PoolContext) -> Manifest:
    """The operator's default Kafka/Redis address for a worker. The Redis URL goes by
    secretKeyRef when the operator names a Secret for it (IMAGEGEN_REDIS_URL_SECRET); a URL with
    a password is never rendered as a plain env value (docs/security.md)."""
    d = ctx.defaults
    if name == naming.ENV_REDIS_URL and d.redis_url_secret:
        return {"name": name, "valueFrom": {"secretKeyRef": {
            "name": d.redis_url_secret, "key": d.redis_url_secret_key}}}
    if value and urlsplit(value).password is not None:
        raise BuildError(
            f"the operator's default {name} carries a password, which workers would get as a "
            "plain env value: set spec.cache.redisUrlFrom, or have the operator name a Secret "
            f"holding it in namespace {ctx.namespace} (IMAGEGEN_REDIS_URL_SECRET; chart value "
            "redis.workerSecret)")
    return {"name": name, "value": value}


def _resources(ctx: PoolContext) -> Manifest:
    r, gpu = ctx.spec.resources, ctx.spec.gpu
    requests: dict[str, str] = {"cpu": r.cpu, "memory": r.memory}
    limits: dict[str, str] = {"memory": r.memory}
    if gpu.count > 0:
        # Extended resources: requests must equal limits.
        requests[gpu.resource_name] = str(gpu.count)
        limits[gpu.resource_name] = str(gpu.count)
    return {"requests": requests, "limits": limits}


def container_security() -> Manifest:
    """The container security context of every pod the operator builds (workers, gateway):
    no privilege escalation, read-only root filesystem, no capabilities."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}}


def _probe(path: str, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _pod_template(ctx: PoolContext, role: str, config_digest: str) -> Manifest:
    spec = ctx.spec
    # The spec's pod labels first: the operator's own (selector) labels always win.
    labels = {**spec.worker.pod_labels, **naming.pool_labels(ctx.name),
              naming.LABEL_COMPONENT: "worker", naming.LABEL_ROLE: role}
    placement = spec.warm if role == naming.ROLE_WARM else spec.cold
    node_selector = dict(placement.node_selector)
    if spec.gpu.product:
        node_selector.setdefault("nvidia.com/gpu.product", spec.gpu.product)
    claim = cache_claim(ctx)
    cache_volume: Manifest = (
        {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        if claim else {"name": "model-cache", "emptyDir": {}}
    )
    pod: Manifest = {
        "terminationGracePeriodSeconds": spec.worker.termination_grace_period_seconds,
        # Workers need no Kubernetes API rights: they talk to Kafka, Redis and S3 only.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "worker",
                "image": worker_image(ctx),
                "imagePullPolicy": spec.worker.image_pull_policy,
                "command": ["imagegen-worker", "run"],
                "env": _env(ctx, role),
                "ports": [{"name": "http", "containerPort": naming.WORKER_HTTP_PORT}],
                "resources": _resources(ctx),
                # Ready only once the models are loaded and a warmup generation succeeded.
                "readinessProbe": _probe("/readyz", 5, 2),
                "livenessProbe": _probe("/livez", 10, 6),
                # Loading weights can take minutes: liveness waits for the first success.
                "startupProbe": _probe("/livez", 5, 120),
                # Drain: stop fetching, finish the batch in hand, publish, commit, leave the group.
                "lifecycle": {"preStop": {"exec": {"command": [
                    "imagegen-worker", "drain", "--wait",
                    str(spec.worker.termination_grace_period_seconds - 5)]}}},
                "securityContext": container_security(),
                "volumeMounts": [
                    {"name": "config", "mountPath": naming.WORKER_CONFIG_DIR, "readOnly": True},
                    {"name": "model-cache", "mountPath": naming.MODEL_CACHE_DIR,
                     "readOnly": bool(claim)},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": naming.config_map_name(ctx.name)}},
            cache_volume,
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    credentials = spec.output.content_credentials
    if credentials is not None:
        # The signing key of the pool's Content Credentials (content_credentials.py), only
        # tls.crt and tls.key, owner-read-only: the worker (fsGroup) reads them at start.
        pod["containers"][0]["volumeMounts"].append(
            {"name": "content-credentials", "mountPath": naming.CONTENT_CREDENTIALS_DIR,
             "readOnly": True})
        pod["volumes"].append({"name": "content-credentials", "secret": {
            "secretName": credentials.secret_name, "defaultMode": 0o440,
            "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
        }})
    if node_selector:
        pod["nodeSelector"] = node_selector
    if placement.tolerations:
        pod["tolerations"] = _tolerations(placement.tolerations)
    account = spec.worker.service_account_name or ctx.defaults.worker_service_account
    if account:
        pod["serviceAccountName"] = account
    return {
        "metadata": {
            "labels": labels,
            "annotations": {
                naming.ANNOTATION_CONFIG_HASH: config_digest,
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(naming.WORKER_HTTP_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": pod,
    }


def worker_image(ctx: PoolContext) -> str:
    """The manifest's image when it sets one, else the operator's default, else the built-in."""
    worker = ctx.spec.worker
    if "image" in worker.model_fields_set or not ctx.defaults.worker_image:
        return worker.image
    return ctx.defaults.worker_image


def deployment(ctx: PoolContext, role: str, config_digest: str) -> Manifest:
    name = naming.deployment_name(ctx.name, role)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**_meta(ctx, name, "worker"),
                     "labels": {**naming.pool_labels(ctx.name), naming.LABEL_COMPONENT: "worker",
                                naming.LABEL_ROLE: role}},
        "spec": {
            # Decided by scaling.policy (bounds included); rendered as is.
            "replicas": ctx.warm_replicas if role == naming.ROLE_WARM else ctx.cold_replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": naming.worker_selector(ctx.name, role)},
            "strategy": ROLLING,
            "template": _pod_template(ctx, role, config_digest),
        },
    }


def metrics_service(ctx: PoolContext) -> Manifest:
    """Headless, so Prometheus (or a person) reaches every worker's /metrics."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ctx, naming.metrics_service_name(ctx.name), "metrics"),
        "spec": {
            "clusterIP": "None",
            "selector": {naming.LABEL_POOL: ctx.name},
            "ports": [{"name": "http-metrics", "port": naming.WORKER_HTTP_PORT,
                       "targetPort": "http"}],
        },
    }


def warm_pdb(ctx: PoolContext) -> Manifest:
    """Voluntary disruptions (node drains) take warm workers one at a time. maxUnavailable rather
    than minAvailable=minReplicas: the latter blocks every drain of a single-replica pool."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(ctx, naming.pdb_name(ctx.name), "worker"),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": naming.worker_selector(ctx.name, naming.ROLE_WARM)},
        },
    }


def pool_children(ctx: PoolContext) -> list[Manifest]:
    """Everything a pool owns, in apply order (config before the workers that mount it)."""
    from . import gateway  # builds on this module's helpers: imported here, not at the top

    cm = config_map(ctx)
    digest = config_hash(cm["data"][naming.WORKER_CONFIG_FILE])
    return [
        cm,
        deployment(ctx, naming.ROLE_WARM, digest),
        deployment(ctx, naming.ROLE_COLD, digest),
        metrics_service(ctx),
        warm_pdb(ctx),
        *(gateway.children(ctx) if ctx.spec.gateway.enabled else []),
    ]
