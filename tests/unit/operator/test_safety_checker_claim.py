"""A pvc:// safety checker (spec.safety.checker.source) is read from the pool's model cache
claim: mounted like a pvc:// model's, and refused when it names another claim than the models."""

from __future__ import annotations

import json

import pytest
from imagegen_api import naming
from imagegen_api.specs import ImageModelSpec
from imagegen_api.workerconfig import WorkerConfig
from imagegen_operator import builders

from tests.unit.operator.test_builders import by_kind, ctx, pod


def test_a_pvc_checker_mounts_its_claim() -> None:
    c = ctx({"safety": {"checker": {"source": "pvc://weights/safety", "threshold": 0.6}}})
    children = builders.pool_children(c)
    vol = {v["name"]: v for v in pod(children, "warm")["volumes"]}["model-cache"]
    assert vol["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}
    text = by_kind(children)["ConfigMap/p1-worker-config"]["data"][naming.WORKER_CONFIG_FILE]
    config = WorkerConfig.model_validate(json.loads(text))
    assert config.safety.checker is not None
    assert (config.safety.checker.source, config.safety.checker.threshold) == (
        "pvc://weights/safety", 0.6)


def test_a_builtin_checker_mounts_no_claim() -> None:
    c = ctx({"safety": {"checker": {"source": "builtin://redness"}}})
    vol = {v["name"]: v for v in pod(builders.pool_children(c), "warm")["volumes"]}["model-cache"]
    assert vol == {"name": "model-cache", "emptyDir": {}}


def test_a_checker_on_another_claim_is_refused_naming_both_fields() -> None:
    model = ImageModelSpec.model_validate({"source": "pvc://models/sdxl"})
    c = ctx({"safety": {"checker": {"source": "pvc://checkers/sc"}}}, models={"tiny": model})
    with pytest.raises(builders.BuildError,
                       match=r"spec.models, spec.safety.checker.source: .*checkers, models"):
        builders.pool_children(c)
