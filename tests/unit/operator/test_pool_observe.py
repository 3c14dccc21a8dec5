"""What the Kopf indexes keep of a worker pod and a worker Deployment (pool_observe.py)."""

from __future__ import annotations

from imagegen_operator.pool_observe import deployment_view, pod_view
from imagegen_operator.pool_plan import DeploymentView, PodView
from imagegen_operator.scaling.drain_order import DELETION_COST


def test_pod_view_keeps_role_phase_readiness_cost_and_deletion() -> None:
    pod = {
        "metadata": {"name": "p1-warm-abc", "labels": {"imagegen.dev/role": "warm"},
                     "annotations": {DELETION_COST: "0"},
                     "deletionTimestamp": "2026-12-03T08:00:00Z"},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert pod_view(pod) == PodView("p1-warm-abc", "warm", "Running", True, "0", True)
    pending = {"metadata": {"name": "x"}, "status": {"phase": "Pending"}}
    assert pod_view(pending) == PodView("x", None, "Pending", False, None, False)


def test_deployment_view_reads_spec_and_status_replicas() -> None:
    dep = {"spec": {"replicas": 3}, "status": {"replicas": 2, "readyReplicas": 1}}
    assert deployment_view(dep) == DeploymentView(desired=3, replicas=2, ready=1)
    assert deployment_view({"spec": {}}) == DeploymentView(0, 0, 0)
