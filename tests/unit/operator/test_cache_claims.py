"""Can the model-cache claim serve where the pool places its workers (warm on on-demand nodes,
cold on spot nodes)? A ReadWriteOnce claim cannot: on a real cluster the second node's pods hang
with Multi-Attach, so the pool says so as a condition."""

from __future__ import annotations

from typing import Any

import pytest
from imagegen_api.specs import GenerationPoolSpec, ImageModelSpec
from imagegen_operator.builders.context import Owner
from imagegen_operator.builders.prefetch import cache_pvc
from imagegen_operator.cache_claims import placement_problem
from imagegen_operator.problems import Reason


def pool(warm_max: int = 2, cold_max: int = 2, **spec: Any) -> GenerationPoolSpec:
    return GenerationPoolSpec.model_validate({
        "models": ["m"], "warm": {"minReplicas": min(1, warm_max), "maxReplicas": warm_max,
                                  **spec.get("warm", {})},
        "cold": {"maxReplicas": cold_max, **spec.get("cold", {})}})


@pytest.mark.parametrize("modes", [("ReadWriteMany",), ("ReadOnlyMany",),
                                   ("ReadWriteOnce", "ReadWriteMany"), ()])
def test_shared_or_unknown_access_modes_serve_any_placement(modes: tuple[str, ...]) -> None:
    assert placement_problem("cache", modes, pool()) is None


def test_read_write_once_with_warm_and_cold_workers_is_a_placement_problem() -> None:
    problem = placement_problem("cache", ("ReadWriteOnce",), pool())
    assert problem is not None and problem.reason is Reason.CACHE_CLAIM_PLACEMENT
    assert "'cache' is ReadWriteOnce" in problem.message
    assert "Multi-Attach" in problem.message and "ReadWriteMany" in problem.message


def test_read_write_once_with_several_warm_workers_anywhere_is_a_problem() -> None:
    problem = placement_problem("cache", ("ReadWriteOnce",), pool(warm_max=3, cold_max=0))
    assert problem is not None and "up to 3 workers" in problem.message


def test_read_write_once_is_fine_for_one_worker_or_a_pool_pinned_to_one_host() -> None:
    assert placement_problem("cache", ("ReadWriteOnce",), pool(warm_max=1, cold_max=0)) is None
    pinned = pool(warm_max=4, cold_max=0,
                  warm={"nodeSelector": {"kubernetes.io/hostname": "gpu-7"}})
    assert placement_problem("cache", ("ReadWriteOnce",), pinned) is None


def test_read_write_once_pod_admits_one_worker_only() -> None:
    assert placement_problem("c", ("ReadWriteOncePod",), pool(warm_max=1, cold_max=0)) is None
    problem = placement_problem("c", ("ReadWriteOncePod",), pool(warm_max=1, cold_max=1))
    assert problem is not None and "one pod may mount it" in problem.message


def test_the_operator_creates_the_claim_read_write_many_unless_told_otherwise() -> None:
    owner = Owner(api_version="imagegen.dev/v1alpha1", kind="ImageModel", name="m", uid="u")
    spec = ImageModelSpec.model_validate(
        {"source": "s3://weights/m", "prefetch": {"claimName": "cache", "size": "10Gi"}})
    pvc = cache_pvc("ns", "m", spec, owner)
    assert pvc is not None and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    once = ImageModelSpec.model_validate(
        {"source": "s3://weights/m", "prefetch": {"claimName": "cache", "size": "10Gi",
                                            "accessMode": "ReadWriteOnce",
                                            "storageClassName": "fast"}})
    pvc = cache_pvc("ns", "m", once, owner)
    assert pvc is not None and pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["storageClassName"] == "fast"
