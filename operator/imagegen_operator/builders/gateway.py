"""Pool → its HTTP gateway (spec.gateway, when enabled): a `<pool>-gateway` Deployment (no GPU,
non-root, read-only root filesystem, probes, resources, spread over nodes), its ClusterIP Service,
a PodDisruptionBudget and, with spec.gateway.autoscaling, a HorizontalPodAutoscaler (CPU) that
owns the Deployment's replica count. The pods read the pool's worker ConfigMap (models, limits,
tiers, topics), the same Kafka/Redis env as the workers, and the API keys from the auth Secret.

Pure; called by workload.pool_children. Image: imagegen_gateway (`imagegen-gateway`).
"""

from __future__ import annotations

import json

from imagegen_api import naming

from .context import PoolContext
from .workload import (
    WORKER_UID,
    BuildError,
    Manifest,
    _meta,
    _probe,
    _tolerations,
    connection_env,
    container_security,
)


def selector(ctx: PoolContext) -> dict[str, str]:
    return {naming.LABEL_POOL: ctx.name, naming.LABEL_COMPONENT: "gateway"}


def _labels(ctx: PoolContext) -> dict[str, str]:
    return {**naming.pool_labels(ctx.name), naming.LABEL_NAME: "imagegen-gateway",
            naming.LABEL_COMPONENT: "gateway"}


def gateway_settings(ctx: PoolContext) -> str:
    """spec.gateway's shedding and webhook knobs as the gateway's GatewaySettings fields (JSON,
    sorted: the same spec renders the same pod template)."""
    gw = ctx.spec.gateway
    hooks = gw.webhooks
    return json.dumps({
        "max_queue_seconds": gw.max_queue_seconds,
        "webhook_allowed_hosts": hooks.allowed_hosts,
        "webhook_max_attempts": hooks.max_attempts,
        "webhook_backoff_seconds": hooks.backoff_seconds,
        "webhook_backoff_max_seconds": hooks.backoff_max_seconds,
        "webhook_timeout_seconds": hooks.timeout_seconds,
    }, sort_keys=True, separators=(",", ":"))


def _env(ctx: PoolContext) -> list[Manifest]:
    return [
        {"name": naming.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": naming.ENV_WORKER_CONFIG,
         "value": f"{naming.WORKER_CONFIG_DIR}/{naming.WORKER_CONFIG_FILE}"},
        {"name": naming.ENV_GATEWAY_KEYS,
         "value": f"{naming.GATEWAY_KEYS_DIR}/{naming.GATEWAY_KEYS_FILE}"},
        {"name": naming.ENV_HTTP_PORT, "value": str(naming.GATEWAY_HTTP_PORT)},
        {"name": naming.ENV_GATEWAY_SETTINGS, "value": gateway_settings(ctx)},
        {"name": "HOME", "value": "/tmp"},
        *connection_env(ctx),
    ]


def replicas(ctx: PoolContext) -> int | None:
    """spec.replicas of the applied Deployment. None (left out) when the autoscaler owns it:
    applying a value would fight the HPA every pass. Only a Deployment about to be created
    gets autoscaling.minReplicas, so it does not start at the API server's default of 1."""
    gw = ctx.spec.gateway
    if gw.autoscaling is None:
        return gw.fixed_replicas
    return None if ctx.gateway_exists else gw.autoscaling.min_replicas


def deployment(ctx: PoolContext) -> Manifest:
    gw = ctx.spec.gateway
    if not gw.auth.secret_name:
        raise BuildError("spec.gateway.auth.secretName is required when the gateway is enabled")
    res = {"cpu": gw.resources.cpu, "memory": gw.resources.memory}
    name = naming.gateway_name(ctx.name)
    pod: Manifest = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": WORKER_UID, "runAsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector(ctx)},
        }],
        "containers": [{
            "name": "gateway",
            "image": gw.image,
            "imagePullPolicy": ctx.spec.worker.image_pull_policy,
            "command": ["imagegen-gateway"],
            "env": _env(ctx),
            "ports": [{"name": "http", "containerPort": naming.GATEWAY_HTTP_PORT}],
            "resources": {"requests": res, "limits": {"memory": gw.resources.memory}},
            "readinessProbe": _probe("/readyz", 5, 2),
            "livenessProbe": _probe("/healthz", 10, 3),
            "securityContext": container_security(),
            "volumeMounts": [
                {"name": "config", "mountPath": naming.WORKER_CONFIG_DIR, "readOnly": True},
                {"name": "keys", "mountPath": naming.GATEWAY_KEYS_DIR, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }],
        "volumes": [
            {"name": "config", "configMap": {"name": naming.config_map_name(ctx.name)}},
            {"name": "keys", "secret": {"secretName": gw.auth.secret_name, "items": [
                {"key": naming.GATEWAY_KEYS_FILE, "path": naming.GATEWAY_KEYS_FILE}]}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if gw.node_selector:
        pod["nodeSelector"] = dict(gw.node_selector)
    if gw.tolerations:
        pod["tolerations"] = _tolerations(gw.tolerations)
    count = replicas(ctx)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**_meta(ctx, name, "gateway"), "labels": _labels(ctx)},
        "spec": {
            **({"replicas": count} if count is not None else {}),
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(ctx)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": _labels(ctx), "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(naming.GATEWAY_HTTP_PORT),
                    "prometheus.io/path": "/metrics"}},
                "spec": pod,
            },
        },
    }


def service(ctx: PoolContext) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**_meta(ctx, naming.gateway_name(ctx.name), "gateway"),
                     "labels": _labels(ctx)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(ctx),
            "ports": [{"name": "http", "port": naming.GATEWAY_HTTP_PORT, "targetPort": "http"}],
        },
    }


def pdb(ctx: PoolContext) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {**_meta(ctx, naming.gateway_name(ctx.name), "gateway"),
                     "labels": _labels(ctx)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(ctx)}},
    }


def hpa(ctx: PoolContext) -> Manifest:
    """The autoscaler of spec.gateway.autoscaling (autoscaling/v2, CPU utilization)."""
    scaling = ctx.spec.gateway.autoscaling
    if scaling is None:
        raise BuildError("spec.gateway.autoscaling is not set: the gateway has fixed replicas")
    name = naming.gateway_name(ctx.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {**_meta(ctx, name, "gateway"), "labels": _labels(ctx)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization",
                "averageUtilization": scaling.target_cpu_utilization_percentage}}}],
        },
    }


def replicas_handover(ctx: PoolContext, current: int) -> Manifest:
    """Applied under a second field manager just before the operator's own apply first leaves
    spec.replicas out: with server-side apply, a field its only manager stops applying is
    removed (the Deployment would drop to 1 pod until the HPA's next sync). This manager keeps
    the current count (within the autoscaler's bounds) until the HPA writes its own."""
    scaling = ctx.spec.gateway.autoscaling
    if scaling is None:
        raise BuildError("spec.gateway.autoscaling is not set: no replicas to hand over")
    keep = min(max(current, scaling.min_replicas), scaling.max_replicas)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": naming.gateway_name(ctx.name), "namespace": ctx.namespace},
        "spec": {"replicas": keep},
    }


def children(ctx: PoolContext) -> list[Manifest]:
    """Deployment, Service, PDB (applied after the ConfigMap the pods mount), and the HPA when
    the gateway scales on CPU."""
    out = [deployment(ctx), service(ctx), pdb(ctx)]
    if ctx.spec.gateway.autoscaling is not None:
        out.append(hpa(ctx))
    return out
