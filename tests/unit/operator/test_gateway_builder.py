"""The gateway's children (builders/gateway.py) and status.gateway (pool_plan): off by default;
when enabled a `<pool>-gateway` Deployment (non-root, read-only root, probes, resources, spread,
keys Secret and worker config mounted), Service and PDB; the Service URL in the status."""

from __future__ import annotations

import json
from typing import Any

import pytest
from imagegen_api import naming
from imagegen_api.specs import GenerationPoolSpec, ImageModelSpec
from imagegen_gateway.settings import GatewaySettings
from imagegen_operator import builders
from imagegen_operator.builders.context import OperatorDefaults, PoolContext
from imagegen_operator.pool_plan import (
    DeploymentView,
    KafkaView,
    PlanSettings,
    PoolMemory,
    PoolState,
    plan,
)
from pydantic import ValidationError

TINY = ImageModelSpec.model_validate({"source": "builtin://tiny-sdxl"})
ON = {"gateway": {"enabled": True, "replicas": 3, "auth": {"secretName": "keys"},
                  "image": "registry.local/imagegen-gateway:1"}}


def ctx(pool: dict[str, Any] | None = None) -> PoolContext:
    spec = GenerationPoolSpec.model_validate({"models": ["tiny"], **(pool or {})})
    return PoolContext(namespace="ns1", name="p1", uid="uid-1", spec=spec,
                       models={"tiny": TINY}, warm_replicas=1, cold_replicas=0,
                       defaults=OperatorDefaults(kafka_bootstrap="kafka:9092",
                                                 redis_url="redis://redis:6379"))


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{c['kind']}/{c['metadata']['name']}": c for c in children}


def test_no_gateway_by_default() -> None:
    assert not [c for c in builders.pool_children(ctx())
                if c["metadata"]["name"] == "p1-gateway"]


def test_enabled_gateway_children() -> None:
    kids = by_kind(builders.pool_children(ctx(ON)))
    assert {"Deployment/p1-gateway", "Service/p1-gateway",
            "PodDisruptionBudget/p1-gateway"} <= set(kids)
    dep = kids["Deployment/p1-gateway"]
    assert dep["spec"]["replicas"] == 3
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector == {naming.LABEL_POOL: "p1", naming.LABEL_COMPONENT: "gateway"}
    assert kids["Service/p1-gateway"]["spec"]["selector"] == selector
    assert kids["PodDisruptionBudget/p1-gateway"]["spec"]["selector"]["matchLabels"] == selector
    # Worker Deployments select by role: gateway pods (no role label) are never theirs.
    template = dep["spec"]["template"]
    assert naming.LABEL_ROLE not in template["metadata"]["labels"]
    assert set(selector.items()) <= set(template["metadata"]["labels"].items())
    for c in kids.values():
        assert c["metadata"]["ownerReferences"][0]["name"] == "p1"


def test_gateway_pod_is_locked_down_and_probed() -> None:
    dep = by_kind(builders.pool_children(ctx(ON)))["Deployment/p1-gateway"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "registry.local/imagegen-gateway:1"
    assert c["command"] == ["imagegen-gateway"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"},
                              "limits": {"memory": "512Mi"}}
    assert "nvidia.com/gpu" not in str(c["resources"])
    assert c["ports"] == [{"name": "http", "containerPort": naming.GATEWAY_HTTP_PORT}]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env[naming.ENV_WORKER_CONFIG] == "/etc/imagegen/worker.json"
    assert env[naming.ENV_GATEWAY_KEYS] == "/etc/imagegen-keys/keys.json"
    assert env[naming.ENV_KAFKA_BOOTSTRAP] == "kafka:9092"
    assert env[naming.ENV_REDIS_URL] == "redis://redis:6379"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["keys"]["secret"]["secretName"] == "keys"
    assert volumes["config"]["configMap"]["name"] == "p1-worker-config"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["keys"]["readOnly"] and mounts["config"]["readOnly"]
    assert mounts["tmp"]["mountPath"] == "/tmp"


def test_enabled_without_keys_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"auth\.secretName is required"):
        GenerationPoolSpec.model_validate({"models": ["tiny"], "gateway": {"enabled": True}})
    with pytest.raises(ValidationError):
        GenerationPoolSpec.model_validate({"models": ["tiny"], "gateway": {"replicas": 0}})


def _state(spec: dict[str, Any], deployments: dict[str, DeploymentView]) -> PoolState:
    return PoolState(namespace="ns1", name="p1", uid="uid-1", generation=1, labels={},
                     spec={"models": ["tiny"], **spec}, status={}, now=1_800_000_000.0,
                     models={"tiny": TINY}, kafka=KafkaView(label="spec"),
                     deployments=deployments)


def test_status_gateway_url_and_pods() -> None:
    settings = PlanSettings(defaults=OperatorDefaults(kafka_bootstrap="k:9092"))
    deps = {"warm": DeploymentView(1, 1, 1), "cold": DeploymentView(0, 0, 0),
            "gateway": DeploymentView(3, 3, 2)}
    on = plan(_state(ON, deps), PoolMemory(), settings)
    assert on.status["gateway"] == {"url": "http://p1-gateway.ns1.svc:8000", "replicas": 3,
                                    "ready": 2}
    off = plan(_state({}, deps), PoolMemory(), settings)
    assert "gateway" not in off.status


def test_gateway_placement_from_the_spec() -> None:
    """Gateways need no GPU: the spec places them (CPU nodes), apart from the workers'."""
    plain = by_kind(builders.pool_children(ctx(ON)))["Deployment/p1-gateway"]
    assert "nodeSelector" not in plain["spec"]["template"]["spec"]
    placed = {"gateway": {**ON["gateway"], "nodeSelector": {"pool": "cpu"},
                          "tolerations": [{"key": "dedicated", "operator": "Equal",
                                           "value": "api", "effect": "NoSchedule"}]}}
    pod = by_kind(builders.pool_children(ctx(placed)))["Deployment/p1-gateway"]["spec"][
        "template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "api",
                                   "effect": "NoSchedule"}]


def test_shedding_and_webhook_settings_reach_the_gateway() -> None:
    spec = {"gateway": {**ON["gateway"], "maxQueueSeconds": 60, "webhooks": {
        "allowedHosts": ["hooks.internal", "10.0.0.0/8"], "maxAttempts": 3,
        "backoffSeconds": 1, "backoffMaxSeconds": 30, "timeoutSeconds": 5}}}
    dep = by_kind(builders.pool_children(ctx(spec)))["Deployment/p1-gateway"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    got = GatewaySettings.model_validate(
        {"worker_config": "/w.json", "keys_file": "/k.json",
         **json.loads(env[naming.ENV_GATEWAY_SETTINGS])})
    assert got.max_queue_seconds == 60
    assert got.webhook_allowed_hosts == ["hooks.internal", "10.0.0.0/8"]
    assert (got.webhook_max_attempts, got.webhook_backoff_seconds,
            got.webhook_backoff_max_seconds, got.webhook_timeout_seconds) == (3, 1, 30, 5)
    # Defaults: 300 s of queue, public webhook targets only.
    dep = by_kind(builders.pool_children(ctx(ON)))["Deployment/p1-gateway"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert json.loads(env[naming.ENV_GATEWAY_SETTINGS])["max_queue_seconds"] == 300
    assert json.loads(env[naming.ENV_GATEWAY_SETTINGS])["webhook_allowed_hosts"] == []
    with pytest.raises(ValidationError, match=r"max_attempts|maxAttempts"):
        GenerationPoolSpec.model_validate({"models": ["tiny"], "gateway": {
            "webhooks": {"maxAttempts": 0}}})
