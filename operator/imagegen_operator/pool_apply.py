"""The apply step of a GenerationPool pass: writes what the plan decided (pool_plan.py).

Order: rank the pods of a shrinking role (so the ReplicaSet removes idle workers first), hand
the gateway's replica count over to its autoscaler (a second field manager keeps the value while
the operator's own apply drops the field), apply the children with server-side apply, delete the
children the spec no longer asks for, then patch the status only when it changes something.
Every write is bounded (k8s.REQUEST_TIMEOUT_S). Events are posted by the handler (Kopf's API).
"""

from __future__ import annotations

import logging

from imagegen_api import naming

from .k8s import KubeError
from .pool_plan import PoolPlan
from .problems import Problem, Reason
from .runtime import Runtime
from .scaling.drain_order import DELETION_COST
from .status import QUEUE_METRICS

log = logging.getLogger(__name__)

# Holds the gateway Deployment's spec.replicas between the operator's last apply of it and the
# autoscaler's first write (builders.gateway.replicas_handover).
HANDOVER_FIELD_MANAGER = f"{naming.FIELD_MANAGER}-hpa-handover"


async def apply(rt: Runtime, namespace: str, name: str, plan: PoolPlan) -> PoolPlan:
    """Returns the plan as it turned out (a failed apply reports its problem)."""
    for pod, cost in sorted(plan.deletion_costs.items()):
        try:
            await rt.kube.annotate("v1", "Pod", namespace, pod, {DELETION_COST: str(cost)})
        except KubeError as err:  # ranking is an optimisation; the drain still protects work
            log.warning("could not rank %s/%s for scale-down: %s", namespace, pod, err)
    try:
        for handover in plan.handovers:
            await rt.kube.apply(handover, field_manager=HANDOVER_FIELD_MANAGER)
        for child in plan.children:
            await rt.kube.apply(child)
        for api_version, kind, child_name in plan.deletions:
            await rt.kube.delete(api_version, kind, namespace, child_name)
            log.info("deleted %s %s/%s: no longer in the pool's spec", kind, namespace,
                     child_name)
    except KubeError as err:
        plan = plan.apply_failed(Problem(Reason.APPLY_FAILED, f"applying children: {err}"))
    if plan.status_changed:
        await rt.kube.patch_status(naming.API_VERSION, naming.GENERATIONPOOL_KIND, namespace,
                                   name, dict(plan.status))
    _export_metrics(rt, namespace, name, plan)
    return plan


def _export_metrics(rt: Runtime, namespace: str, name: str, plan: PoolPlan) -> None:
    m = rt.metrics
    for role, before, after in plan.scaled:
        m.scale_events.labels(namespace, name, role, "up" if after > before else "down").inc()
    st = plan.status
    for tier, lag in (st.get("queue") or {}).get("lagByTier", {}).items():
        m.pool_lag.labels(namespace, name, tier).set(lag)
    for tier, seconds in (st.get("queue") or {}).get("oldestSecondsByTier", {}).items():
        m.pool_oldest.labels(namespace, name, tier).set(seconds)
    for tier, seconds in plan.tier_max_wait.items():
        m.pool_max_wait.labels(namespace, name, tier).set(seconds)
    for role in naming.ROLES:
        part = st.get(role)
        if isinstance(part, dict):
            m.pool_desired.labels(namespace, name, role).set(part.get("desired", 0))
            m.pool_ready.labels(namespace, name, role).set(part.get("ready", 0))
    for role, most in plan.role_max.items():
        m.pool_max.labels(namespace, name, role).set(most)
    if "throughput" in st:
        m.pool_throughput.labels(namespace, name).set(st["throughput"])
    queue = st.get("queue")
    if isinstance(queue, dict):
        m.pool_stalled.labels(namespace, name).set(len(queue.get("stalledPartitions") or []))
    for cond in st.get("conditions") or []:
        if cond.get("type") == QUEUE_METRICS:
            m.pool_queue_metrics.labels(namespace, name).set(
                1.0 if cond.get("status") == "True" else 0.0)
