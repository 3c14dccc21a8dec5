"""docs/reference.md is generated from the spec models and kept up to date."""

from __future__ import annotations

import ast
from pathlib import Path

from imagegen_operator import docgen


def test_reference_is_up_to_date() -> None:
    assert docgen.main(["--check"]) == 0, "run `python -m imagegen_operator.docgen`"


def test_reference_names_fields_limits_and_rules() -> None:
    text = docgen.render()
    assert "`spec.warm.minReplicas`" in text
    assert "`spec.queue.tiers[].maxWaitSeconds`" in text
    assert "`spec.gpuMemoryGiB`" in text  # the explicit alias, not gpuMemoryGib
    assert "warm.minReplicas must be less than or equal to warm.maxReplicas" in text
    assert "source is immutable: create a new ImageModel to serve other weights" in text
    assert "set at most one of redisUrl or redisUrlFrom" in text
    # Limits: a bound, a multipleOf and an enum of the models.
    row = next(line for line in text.splitlines() if line.startswith("| `spec.defaults.width`"))
    assert "min 64" in row and "max 8192" in row and "multipleOf 8" in row
    assert "one of `euler`, `euler_a`, `ddim`, `dpmpp_2m`, `lcm`" in text


def test_descriptions_name_existing_fields() -> None:
    text = docgen.render()
    for key in docgen.DESCRIPTIONS:
        _, path = key.split(":", 1)
        assert f"| `{path}` |" in text, f"DESCRIPTIONS has {key}, which is no field"


def test_tables_do_not_break_on_pipes(tmp_path: Path) -> None:
    out = tmp_path / "reference.md"
    assert docgen.main(["--out", str(out)]) == 0
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
