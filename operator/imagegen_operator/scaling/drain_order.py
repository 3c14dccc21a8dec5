"""Which workers a scale-down should remove first. Pure.

The ReplicaSet controller removes pods with the lowest `controller.kubernetes.io/pod-deletion-cost`
first. Before a scale-down the operator ranks the workers of the shrinking role from their
heartbeats: pods not ready yet (still loading a model) go first, then idle workers, and workers
in the middle of a batch last, the busiest at the very end. A removed worker still drains (its
SIGTERM path finishes the batch in hand), so this only makes the common case cheaper: fewer
batches cut short, fewer models loaded for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"

NOT_READY = -100
IDLE = 0
BUSY = 1000


@dataclass(frozen=True)
class WorkerPod:
    name: str
    ready: bool
    annotation: str | None  # the current deletion-cost annotation, if any


def deletion_costs(pods: list[WorkerPod], in_flight: Mapping[str, int]) -> dict[str, int]:
    """Pod name → deletion cost, for the pods whose annotation must change."""
    out: dict[str, int] = {}
    for pod in pods:
        busy = in_flight.get(pod.name, 0)
        cost = NOT_READY if not pod.ready else BUSY + busy if busy > 0 else IDLE
        if pod.annotation != str(cost):
            out[pod.name] = cost
    return out
