"""The gateway scaled on CPU, on the real control plane: the operator under test renders the
`<pool>-gateway` HorizontalPodAutoscaler (autoscaling/v2, owned by the pool), hands the
Deployment's replica count over to it, never resets that count afterwards (not on a spec change,
not on the periodic re-apply that reverts manual edits of the HPA), and deletes the HPA when
autoscaling is turned off (the fixed count applies again), the whole gateway when it is
disabled. The HPA controller of the stack's kube-controller-manager acts on the HPA for real;
with no metrics API it only enforces min/max, which is what lets the counts below be exact.
Gateway pods land on KWOK nodes (no process runs): this file is about reconciling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Kubectl, OperatorProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
POOL = "gwscale"
NAME = f"{POOL}-gateway"


def pool_manifest(gateway: str) -> str:
    return f"""
apiVersion: imagegen.dev/v1alpha1
kind: GenerationPool
metadata: {{name: {POOL}}}
spec:
  models: [tiny-sdxl]
  warm: {{minReplicas: 1, maxReplicas: 1}}
  cold: {{maxReplicas: 0}}
  autoscaling: {{pollSeconds: 1}}
  gateway: {gateway}
"""


def get(kubectl: Kubectl, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = kubectl("get", kind, name, "-n", ns, "-o", "json", "--show-managed-fields",
                   check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def replicas(kubectl: Kubectl, ns: str) -> int | None:
    dep = get(kubectl, ns, "deploy", NAME)
    return None if dep is None else int(dep["spec"]["replicas"])


def operator_applies_replicas(dep: dict[str, Any]) -> bool:
    return any(e.get("manager") == "imagegen-operator" and e.get("operation") == "Apply"
               and "f:replicas" in (e.get("fieldsV1") or {}).get("f:spec", {})
               for e in dep["metadata"].get("managedFields") or [])


@pytest.fixture
def ns(kubectl: Kubectl, operator: OperatorProcess, k8s_namespace: str) -> str:
    kubectl("apply", "-n", k8s_namespace, "-f", str(ROOT / "manifests/examples/tiny-model.yaml"))
    return k8s_namespace


def test_gateway_hpa_created_updated_removed_without_fighting_it(
        kubectl: Kubectl, operator: OperatorProcess, ns: str) -> None:
    kubectl("apply", "-n", ns, "-f", "-", input=pool_manifest(
        "{enabled: true, auth: {secretName: keys}, autoscaling: "
        "{minReplicas: 2, maxReplicas: 4, targetCPUUtilizationPercentage: 50}}"))

    # Created: the HPA as the spec says, owned by the pool; the Deployment starts at minReplicas.
    hpa = wait_for(lambda: get(kubectl, ns, "hpa", NAME), 30, "the gateway's HPA")
    assert isinstance(hpa, dict)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": NAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization",
                                                               "averageUtilization": 50}
    (owner,) = hpa["metadata"]["ownerReferences"]
    assert owner["kind"] == "GenerationPool" and owner["name"] == POOL and owner["controller"]
    wait_for(lambda: replicas(kubectl, ns) == 2, 30, "the gateway Deployment at minReplicas")

    # Handed over: the operator's apply no longer manages spec.replicas, and the count never
    # dropped on the way (the field was kept by the hand-over manager).
    def handed_over() -> bool:
        dep = get(kubectl, ns, "deploy", NAME)
        return dep is not None and not operator_applies_replicas(dep)
    dep = get(kubectl, ns, "deploy", NAME)
    assert dep is not None and dep["metadata"]["managedFields"]  # what the check below reads
    wait_for(handed_over, 30, "the operator to leave spec.replicas to the HPA")
    assert replicas(kubectl, ns) == 2

    # The autoscaler's count (3, as the HPA would set it) survives the operator's periodic
    # re-apply: a manual edit of the HPA is reverted by it (RESYNC_SECONDS = 30), the
    # Deployment's replicas are left alone.
    kubectl("scale", "deploy", NAME, "-n", ns, "--replicas=3")
    kubectl("patch", "hpa", NAME, "-n", ns, "--type=merge", "-p", '{"spec": {"maxReplicas": 9}}')
    wait_for(lambda: (h := get(kubectl, ns, "hpa", NAME)) and h["spec"]["maxReplicas"] == 4,
             45, "the operator to revert the HPA's manual edit")
    assert replicas(kubectl, ns) == 3, "the operator reset the HPA-owned replicas"

    # Updated: a spec change re-renders the HPA at once; the replicas stay the HPA's.
    kubectl("patch", "gp", POOL, "-n", ns, "--type=merge", "-p", json.dumps(
        {"spec": {"gateway": {"autoscaling": {"maxReplicas": 5,
                                              "targetCPUUtilizationPercentage": 80}}}}))
    wait_for(lambda: (h := get(kubectl, ns, "hpa", NAME)) and h["spec"]["maxReplicas"] == 5
             and h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80,
             30, "the HPA updated from the spec")
    assert replicas(kubectl, ns) == 3, "the operator reset the HPA-owned replicas"

    # The HPA controller (kube-controller-manager) really drives the Deployment: below
    # minReplicas it scales it back up.
    kubectl("scale", "deploy", NAME, "-n", ns, "--replicas=1")
    wait_for(lambda: replicas(kubectl, ns) == 2, 60, "the HPA controller to restore minReplicas")

    # Removed: autoscaling off → the HPA is deleted and the fixed count applies again.
    kubectl("patch", "gp", POOL, "-n", ns, "--type=merge", "-p", json.dumps(
        {"spec": {"gateway": {"autoscaling": None, "replicas": 1}}}))
    wait_for(lambda: get(kubectl, ns, "hpa", NAME) is None, 30, "the HPA to be deleted")
    wait_for(lambda: replicas(kubectl, ns) == 1, 30, "the fixed replicas applied again")
    dep = get(kubectl, ns, "deploy", NAME)
    assert dep is not None and operator_applies_replicas(dep)

    # Disabled: the gateway's children go.
    kubectl("patch", "gp", POOL, "-n", ns, "--type=merge", "-p",
            '{"spec": {"gateway": {"enabled": false}}}')
    wait_for(lambda: all(get(kubectl, ns, kind, NAME) is None
                         for kind in ("deploy", "svc", "pdb")), 30,
             "the disabled gateway's Deployment, Service and PDB to be deleted")
