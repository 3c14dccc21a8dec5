"""docs/reference.md is generated from the spec models and kept up to date."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from imagegen_tools import docgen

ROOT = Path(__file__).resolve().parents[3]

# Fields the reference must describe (the descriptions live in the models, api/.../specs.py).
DESCRIBED = [
    "ImageModel:spec.source", "ImageModel:spec.pipeline", "ImageModel:spec.defaults",
    "ImageModel:spec.limits", "ImageModel:spec.prefetch", "ImageModel:spec.prefetch.size",
    "ImageModel:spec.optimizations", "ImageModel:spec.optimizations.stepCache",
    "ImageModel:spec.optimizations.fp8", "GenerationPool:spec.models",
    "GenerationPool:spec.gpu.count", "GenerationPool:spec.warm.minReplicas",
    "GenerationPool:spec.warm.maxReplicas", "GenerationPool:spec.cold.maxReplicas",
    "GenerationPool:spec.cold.activationLag", "GenerationPool:spec.queue.bootstrapServers",
    "GenerationPool:spec.queue.tiers[].maxWaitSeconds", "GenerationPool:spec.queue.maxAttempts",
    "GenerationPool:spec.autoscaling.targetWaitSeconds",
    "GenerationPool:spec.autoscaling.allowIdleConsumers", "GenerationPool:spec.cache.redisUrl",
    "GenerationPool:spec.storage.credentialsSecret",
    "GenerationPool:spec.worker.terminationGracePeriodSeconds",
    "GenerationPool:spec.worker.podLabels", "GenerationPool:status.ready",
    "GenerationPool:status.desired", "GenerationPool:status.throughput",
    "ImageModel:status.cached",
]


def test_reference_is_up_to_date() -> None:
    assert docgen.main(["--check", "--root", str(ROOT)]) == 0, "run `make crds`"


def test_reference_names_fields_limits_and_rules() -> None:
    text = docgen.render()
    assert "`spec.warm.minReplicas`" in text
    assert "`spec.queue.tiers[].maxWaitSeconds`" in text
    # Removed (nothing read it; placement by GPU is spec.gpu.product or a nodeSelector).
    assert "gpuMemoryGiB" not in text and "gpuMemoryGib" not in text
    assert "warm.minReplicas must be less than or equal to warm.maxReplicas" in text
    assert "source is immutable: create a new ImageModel to serve other weights" in text
    assert "set at most one of redisUrl or redisUrlFrom" in text
    # Limits: a bound, a multipleOf and an enum of the models.
    row = next(line for line in text.splitlines() if line.startswith("| `spec.defaults.width`"))
    assert "min 64" in row and "max 8192" in row and "multipleOf 8" in row
    assert "one of `euler`, `euler_a`, `ddim`, `dpmpp_2m`, `lcm`" in text


@pytest.mark.parametrize("key", DESCRIBED)
def test_described_fields_exist_and_carry_their_model_description(key: str) -> None:
    kind, path = key.split(":", 1)
    text = docgen.render()
    section = text.split(f"\n## {kind}\n", 1)[1].split("\n## ", 1)[0]
    row = next((line for line in section.splitlines() if line.startswith(f"| `{path}` |")), None)
    assert row is not None, f"{key} is no field"
    assert row.rstrip(" |").rsplit("|", 1)[-1].strip(), f"{key} has no description"


def test_descriptions_are_not_restated_in_the_generator() -> None:
    assert not hasattr(docgen, "DESCRIPTIONS")
    models = (ROOT / "api" / "imagegen_api" / "specs.py").read_text()
    assert "Lossy, opt-in: fp8 matmuls." in models
    assert "Lossy, opt-in: fp8 matmuls." not in Path(docgen.__file__).read_text()


def test_tables_do_not_break_on_pipes(tmp_path: Path) -> None:
    out = tmp_path / "reference.md"
    assert docgen.main(["--out", str(out)]) == 0
    assert docgen.main(["--root", str(tmp_path), "--check"]) == 1  # no docs/reference.md there
    row = next(line for line in out.read_text().splitlines()
               if line.startswith("| `spec.source` | string"))
    assert "\\|hf://" not in row and "\\|s3://" in row  # the pattern's alternatives escaped
    # Five columns: six unescaped pipes.
    assert row.replace("\\|", "").count("|") == 6


def test_pure_module() -> None:
    """docgen (and crdgen, which it uses) import no runtime client."""
    forbidden = {"kopf", "kubernetes_asyncio", "aiokafka", "aiohttp", "redis"}
    for module in (docgen, docgen.crdgen):
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & forbidden, (module.__name__, names)
