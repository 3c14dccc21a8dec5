"""The gateway scaled on CPU (spec.gateway.autoscaling): spec rules, the HPA builder, the
Deployment's replicas left to the HPA (and handed over without a dip), the HPA deleted when
autoscaling is turned off, and the whole gateway when it is disabled. Pure: builders and the
plan, no cluster (tests/integration/test_gateway_autoscaling.py runs it on the control plane)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from imagegen_api.specs import GATEWAY_DEFAULT_REPLICAS, GenerationPoolSpec, ImageModelSpec
from imagegen_operator import builders
from imagegen_operator.builders import gateway
from imagegen_operator.builders.context import OperatorDefaults, PoolContext
from imagegen_operator.pool_observe import applies_replicas, deployment_view
from imagegen_operator.pool_plan import (
    DeploymentView,
    KafkaView,
    PlanSettings,
    PoolMemory,
    PoolState,
    plan,
)
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[3]
TINY = ImageModelSpec.model_validate({"source": "builtin://tiny-sdxl"})
BASE = {"enabled": True, "auth": {"secretName": "keys"}}
SCALED = {"gateway": {**BASE, "autoscaling": {"minReplicas": 2, "maxReplicas": 6,
                                              "targetCPUUtilizationPercentage": 60}}}
FIXED = {"gateway": {**BASE, "replicas": 3}}
SETTINGS = PlanSettings(defaults=OperatorDefaults(kafka_bootstrap="k:9092"))


def ctx(pool: dict[str, Any], *, exists: bool = False) -> PoolContext:
    spec = GenerationPoolSpec.model_validate({"models": ["tiny"], **pool})
    return PoolContext(namespace="ns1", name="p1", uid="uid-1", spec=spec,
                       models={"tiny": TINY}, warm_replicas=1, cold_replicas=0,
                       gateway_exists=exists)


def kinds(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{c['kind']}/{c['metadata']['name']}": c for c in children}


# --- spec rules ------------------------------------------------------------------------------


def test_replicas_default_when_neither_is_set() -> None:
    spec = GenerationPoolSpec.model_validate({"models": ["tiny"], "gateway": BASE})
    assert spec.gateway.replicas is None and spec.gateway.autoscaling is None
    assert spec.gateway.fixed_replicas == GATEWAY_DEFAULT_REPLICAS == 2


@pytest.mark.parametrize(("gw", "message"), [
    ({"replicas": 2, "autoscaling": {"maxReplicas": 4}},
     "gateway.replicas (a fixed count) and gateway.autoscaling (scaled on CPU) are exclusive"),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 3}},
     "gateway.autoscaling.minReplicas must be less than or equal to "
     "gateway.autoscaling.maxReplicas"),
    ({"autoscaling": {"maxReplicas": 101}}, "less than or equal to 100"),
    ({"autoscaling": {"targetCPUUtilizationPercentage": 5}}, "greater than or equal to 10"),
])
def test_bad_autoscaling_is_refused_naming_the_rule(gw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GenerationPoolSpec.model_validate({"models": ["tiny"], "gateway": {**BASE, **gw}})


def test_the_crd_carries_the_same_rules() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "generationpools.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    gw = schema["properties"]["spec"]["properties"]["gateway"]
    assert "default" not in gw["properties"]["replicas"]
    assert {r["rule"] for r in gw["x-kubernetes-validations"]} >= {
        "!has(self.replicas) || !has(self.autoscaling)"}
    scaling = gw["properties"]["autoscaling"]
    assert [r["rule"] for r in scaling["x-kubernetes-validations"]] == [
        "self.minReplicas <= self.maxReplicas"]
    assert set(scaling["properties"]) == {"minReplicas", "maxReplicas",
                                          "targetCPUUtilizationPercentage"}


# --- builders --------------------------------------------------------------------------------


def test_fixed_replicas_render_no_hpa() -> None:
    kids = kinds(builders.pool_children(ctx(FIXED, exists=True)))
    assert kids["Deployment/p1-gateway"]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler/p1-gateway" not in kids
    dflt = kinds(builders.pool_children(ctx({"gateway": BASE})))
    assert dflt["Deployment/p1-gateway"]["spec"]["replicas"] == 2


def test_hpa_targets_the_gateway_deployment_on_cpu() -> None:
    kids = kinds(builders.pool_children(ctx(SCALED)))
    hpa = kids["HorizontalPodAutoscaler/p1-gateway"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "p1-gateway"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 60}}}]
    (owner,) = hpa["metadata"]["ownerReferences"]
    assert owner["kind"] == "GenerationPool" and owner["uid"] == "uid-1" and owner["controller"]
    assert hpa["metadata"]["labels"] == kids["Deployment/p1-gateway"]["metadata"]["labels"]
    # Applied after the Deployment it scales.
    order = [f"{c['kind']}/{c['metadata']['name']}" for c in builders.pool_children(ctx(SCALED))]
    assert order.index("HorizontalPodAutoscaler/p1-gateway") > order.index("Deployment/p1-gateway")


def test_replicas_left_out_once_the_hpa_owns_them() -> None:
    new = kinds(builders.pool_children(ctx(SCALED)))["Deployment/p1-gateway"]
    assert new["spec"]["replicas"] == 2  # created at minReplicas, not the API default of 1
    existing = kinds(builders.pool_children(ctx(SCALED, exists=True)))["Deployment/p1-gateway"]
    assert "replicas" not in existing["spec"]
    assert existing["spec"]["template"] == new["spec"]["template"]


@pytest.mark.parametrize(("current", "kept"), [(4, 4), (1, 2), (9, 6)])
def test_handover_keeps_the_current_count_within_bounds(current: int, kept: int) -> None:
    h = gateway.replicas_handover(ctx(SCALED, exists=True), current)
    assert h == {"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "p1-gateway", "namespace": "ns1"},
                 "spec": {"replicas": kept}}


def test_hpa_and_handover_need_autoscaling() -> None:
    with pytest.raises(builders.BuildError, match="autoscaling is not set"):
        gateway.hpa(ctx(FIXED))
    with pytest.raises(builders.BuildError, match="autoscaling is not set"):
        gateway.replicas_handover(ctx(FIXED), 2)


# --- who manages spec.replicas (managedFields) -----------------------------------------------


def managed(manager: str, operation: str, spec_fields: dict[str, Any]) -> dict[str, Any]:
    return {"manager": manager, "operation": operation,
            "fieldsV1": {"f:spec": spec_fields}}


def test_applies_replicas_reads_the_operators_apply_entry() -> None:
    ours = managed("imagegen-operator", "Apply", {"f:replicas": {}, "f:template": {}})
    ours_without = managed("imagegen-operator", "Apply", {"f:template": {}})
    hpa = managed("kube-controller-manager", "Update", {"f:replicas": {}})
    assert applies_replicas({"metadata": {"managedFields": [ours, hpa]}})
    assert not applies_replicas({"metadata": {"managedFields": [ours_without, hpa]}})
    assert not applies_replicas({"metadata": {}})
    view = deployment_view({"metadata": {"managedFields": [ours]}, "spec": {"replicas": 3},
                            "status": {"replicas": 3, "readyReplicas": 2}})
    assert view == DeploymentView(3, 3, 2, replicas_applied=True)


# --- the plan --------------------------------------------------------------------------------


def state(gw: dict[str, Any], gateway_dep: DeploymentView | None,
          hpa: bool = False) -> PoolState:
    deps: dict[str, DeploymentView | None] = {"warm": DeploymentView(1, 1, 1),
                                              "cold": DeploymentView(0, 0, 0),
                                              "gateway": gateway_dep}
    return PoolState(namespace="ns1", name="p1", uid="uid-1", generation=1, labels={},
                     spec={"models": ["tiny"], **gw}, status={}, now=1_800_000_000.0,
                     models={"tiny": TINY}, kafka=KafkaView(label="spec"),
                     deployments=deps, gateway_hpa=hpa)


def gateway_dep(p: Any) -> dict[str, Any]:
    return kinds(list(p.children))["Deployment/p1-gateway"]


def test_first_pass_creates_at_min_then_hands_over_then_leaves_replicas_out() -> None:
    first = plan(state(SCALED, None), PoolMemory(), SETTINGS)
    assert gateway_dep(first)["spec"]["replicas"] == 2 and first.handovers == ()
    assert "HorizontalPodAutoscaler/p1-gateway" in kinds(list(first.children))
    # The operator's apply still manages replicas: hand over the current 2, drop the field.
    second = plan(state(SCALED, DeploymentView(2, 2, 2, replicas_applied=True), hpa=True),
                  first.memory, SETTINGS)
    assert [h["spec"] for h in second.handovers] == [{"replicas": 2}]
    assert "replicas" not in gateway_dep(second)["spec"]
    assert second.deletions == ()
    # The HPA scaled to 5 since: nothing resets it, no more hand-overs.
    third = plan(state(SCALED, DeploymentView(5, 5, 5), hpa=True), second.memory, SETTINGS)
    assert third.handovers == ()
    assert all("replicas" not in c["spec"] for c in third.children
               if c["kind"] == "Deployment" and c["metadata"]["name"] == "p1-gateway")


def test_an_existing_fixed_gateway_switching_to_autoscaling_is_handed_over() -> None:
    p = plan(state(SCALED, DeploymentView(3, 3, 3, replicas_applied=True)), PoolMemory(),
             SETTINGS)
    assert [h["spec"]["replicas"] for h in p.handovers] == [3]
    assert "replicas" not in gateway_dep(p)["spec"]


def test_autoscaling_turned_off_deletes_the_hpa_and_sets_replicas() -> None:
    p = plan(state(FIXED, DeploymentView(5, 5, 5), hpa=True), PoolMemory(), SETTINGS)
    assert p.deletions == (("autoscaling/v2", "HorizontalPodAutoscaler", "p1-gateway"),)
    assert gateway_dep(p)["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler/p1-gateway" not in kinds(list(p.children))
    # Once it is gone nothing more is deleted.
    gone = plan(state(FIXED, DeploymentView(3, 3, 3, replicas_applied=True)), p.memory, SETTINGS)
    assert gone.deletions == ()


def test_disabled_gateway_is_deleted_with_its_hpa() -> None:
    p = plan(state({"gateway": {"enabled": False}}, DeploymentView(2, 2, 2), hpa=True),
             PoolMemory(), SETTINGS)
    assert set(p.deletions) == {
        ("autoscaling/v2", "HorizontalPodAutoscaler", "p1-gateway"),
        ("apps/v1", "Deployment", "p1-gateway"), ("v1", "Service", "p1-gateway"),
        ("policy/v1", "PodDisruptionBudget", "p1-gateway")}
    never = plan(state({}, None), PoolMemory(), SETTINGS)
    assert never.deletions == ()
