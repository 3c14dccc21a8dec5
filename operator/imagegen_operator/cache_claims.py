"""Can the pool's model-cache claim serve where the pool places its workers? Pure.

Workers mount the claim read-only, warm ones on on-demand nodes and cold ones on spot nodes. A
ReadWriteOnce claim attaches to one node at a time, so a second node's pods hang in
ContainerCreating with a Multi-Attach error on a real cluster (KWOK never shows it); a
ReadWriteOncePod claim admits one pod in all. Said up front, as a condition, instead.
"""

from __future__ import annotations

from collections.abc import Collection

from imagegen_api.specs import GenerationPoolSpec

from .problems import Problem, Reason

ONE_NODE = "ReadWriteOnce"
ONE_POD = "ReadWriteOncePod"


def placement_problem(claim: str, access_modes: Collection[str],
                      spec: GenerationPoolSpec) -> Problem | None:
    """A problem when the claim's access modes cannot serve the pool's workers; None when they
    can (or the modes are unknown: the claim is not there yet)."""
    modes = set(access_modes)
    if not modes or modes - {ONE_NODE, ONE_POD}:
        return None  # ReadWriteMany / ReadOnlyMany among them: any number of nodes
    most = spec.warm.max_replicas + spec.cold.max_replicas
    fix = ("create it ReadWriteMany (ImageModel spec.prefetch.accessMode, a storage class that "
           "supports it: NFS, EFS, Filestore, CephFS) or keep the pool to one worker/node")
    if modes == {ONE_POD}:
        if most > 1:
            return Problem(Reason.CACHE_CLAIM_PLACEMENT,
                           f"model cache claim {claim!r} is ReadWriteOncePod: one pod may mount "
                           f"it, the pool runs up to {most} workers; {fix}")
        return None
    if spec.cold.max_replicas > 0 and spec.warm.max_replicas > 0:
        return Problem(Reason.CACHE_CLAIM_PLACEMENT,
                       f"model cache claim {claim!r} is ReadWriteOnce (one node at a time) but "
                       "the pool places warm workers on on-demand nodes and cold ones on spot "
                       "nodes: pods on a second node fail with Multi-Attach; " + fix)
    if most > 1 and not _pinned_to_one_node(spec):
        return Problem(Reason.CACHE_CLAIM_PLACEMENT,
                       f"model cache claim {claim!r} is ReadWriteOnce (one node at a time) and "
                       f"the pool runs up to {most} workers on any matching node: pods on a "
                       "second node fail with Multi-Attach; " + fix)
    return None


def _pinned_to_one_node(spec: GenerationPoolSpec) -> bool:
    """Both roles' node selectors name one host (kubernetes.io/hostname)."""
    hosts = {spec.warm.node_selector.get("kubernetes.io/hostname"),
             spec.cold.node_selector.get("kubernetes.io/hostname")
             if spec.cold.max_replicas else spec.warm.node_selector.get("kubernetes.io/hostname")}
    return len(hosts) == 1 and None not in hosts
