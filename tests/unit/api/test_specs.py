"""Spec parsing: defaults make a minimal manifest a few lines; cross-field rules name the field."""

import pytest
from imagegen_api import naming, specs
from pydantic import ValidationError


def test_minimal_pool_gets_production_defaults() -> None:
    pool = specs.GenerationPoolSpec.model_validate({"models": ["sdxl-base"]})
    assert pool.default_model == "sdxl-base"
    assert pool.tier_names == ["turbo", "fast", "relax"]
    assert [t.weight for t in pool.queue.tiers] == [10, 5, 1]
    assert pool.autoscaling.target_lag_per_worker == 2
    assert pool.autoscaling.scale_down_stabilization_seconds == 300
    assert pool.warm.min_replicas == 1
    assert pool.cold.node_selector == {naming.LABEL_CAPACITY_TYPE: naming.CAPACITY_SPOT}
    assert pool.cold.tolerations[0].key == naming.TAINT_SPOT


def test_camel_case_round_trip() -> None:
    wire = {"models": ["m"], "warm": {"minReplicas": 2, "maxReplicas": 3}}
    pool = specs.GenerationPoolSpec.model_validate(wire)
    assert pool.warm.min_replicas == 2
    again = specs.GenerationPoolSpec.model_validate(pool.to_wire())
    assert again == pool


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"models": ["m"], "warm": {"minReplicas": 5, "maxReplicas": 2}}, "warm.minReplicas"),
        ({"models": []}, "models"),
        ({"models": ["m"], "queue": {"tiers": [{"name": "a", "weight": 0}]}}, "weight"),
        ({"models": ["m"], "unknownField": 1}, "unknownField"),
    ],
)
def test_bad_pool_names_the_field(spec: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        specs.GenerationPoolSpec.model_validate(spec)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"source": "ftp://x/y"}, "source"),
        ({"source": "builtin://tiny-sdxl", "defaults": {"width": 1001}}, "multiple of 8"),
        (
            {"source": "builtin://tiny-sdxl", "defaults": {"width": 4096, "height": 4096}},
            "limits.maxPixels",
        ),
        ({"source": "builtin://tiny-sdxl", "defaults": {"steps": 200}}, "limits.maxSteps"),
        ({"source": "builtin://tiny-sdxl", "pipeline": "flux"}, "pipeline to sdxl"),
        ({"source": "builtin://tiny-sdxl", "defaults": {"sampler": "heun"}}, "sampler"),
    ],
)
def test_bad_model_names_the_field(spec: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        specs.ImageModelSpec.model_validate(spec)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "source",
    [
        "hf://stabilityai/stable-diffusion-xl-base-1.0",
        "hf://stabilityai/stable-diffusion-xl-base-1.0@462165984030d82259a11f4367a4eed129e94a7b",
        "s3://models/sdxl/base",
        "pvc://model-cache/sdxl",
        "file:///models/sdxl",
        "builtin://tiny-sdxl",
    ],
)
def test_known_sources_accepted(source: str) -> None:
    assert specs.ImageModelSpec.model_validate({"source": source}).source == source


def test_worker_pod_labels_are_kubernetes_labels_the_operator_does_not_own() -> None:
    ok = specs.WorkerSpec.model_validate(
        {"podLabels": {"imagegen.dev/local-runner": "true", "team": "", "cost-center": "a.b_c"}})
    assert ok.pod_labels["imagegen.dev/local-runner"] == "true"
    for bad, needle in [
        ({naming.LABEL_POOL: "x"}, "is set by the operator"),
        ({naming.LABEL_ROLE: "warm"}, "is set by the operator"),
        ({"Bad Key": "x"}, "is not a Kubernetes label key"),
        ({"a/b/c": "x"}, "is not a Kubernetes label key"),
        ({"x" * 64: "x"}, "is not a Kubernetes label key"),
        ({"ok": "x" * 64}, "at most 63 characters"),
        ({"ok": "-x"}, "should match pattern"),
        ({f"k{i}": "v" for i in range(33)}, "at most 32 items"),
    ]:
        with pytest.raises(ValidationError) as err:
            specs.WorkerSpec.model_validate({"podLabels": bad})
        assert "podLabels" in str(err.value) and needle in str(err.value), str(err.value)
