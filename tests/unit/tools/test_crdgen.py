"""The CRDs in crds/ (and the install base's copy) are generated from the spec models and
structurally valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from imagegen_tools import crdgen

ROOT = Path(__file__).resolve().parents[3]


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict) and "type" in node:
        out.append((path, node))
        for name, sub in (node.get("properties") or {}).items():
            out += walk(sub, f"{path}.{name}")
        if "items" in node:
            out += walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_crds_in_repo_match_models() -> None:
    assert crdgen.main(["--check", "--root", str(ROOT)]) == 0


def test_outputs_follow_root_and_out(tmp_path: Path) -> None:
    """Installed or not, the tool writes where it is told, never next to its own file."""
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    for sub in ("crds", "manifests/install/crds"):
        assert sorted(p.name for p in (tmp_path / sub).iterdir()) == [
            "generationpools.yaml", "imagemodels.yaml"]
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "crds" / "imagemodels.yaml").write_text("stale\n")
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1
    out = tmp_path / "elsewhere"
    assert crdgen.main(["--out", str(out)]) == 0
    assert (out / "imagemodels.yaml").read_text() == (
        ROOT / "crds" / "imagemodels.yaml").read_text()


@pytest.mark.parametrize("name", ["imagemodels.yaml", "generationpools.yaml"])
def test_structural(name: str) -> None:
    crd = crdgen.render()[name]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert "$ref" not in node and "anyOf" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node["type"] in {"object", "array", "string", "integer", "number", "boolean"}


def test_names_columns_and_rules() -> None:
    pools = crdgen.render()["generationpools.yaml"]["spec"]
    assert pools["names"]["shortNames"] == ["gp"]
    assert pools["names"]["categories"] == ["imagegen"]
    version = pools["versions"][0]
    cols = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert cols == ["Model", "Ready", "Warm", "Cold", "Queue", "Age"]
    assert version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    warm_rules = spec["properties"]["warm"]["x-kubernetes-validations"]
    assert "minReplicas <= self.maxReplicas" in warm_rules[0]["rule"]
    models = crdgen.render()["imagemodels.yaml"]["spec"]
    assert models["names"]["shortNames"] == ["im"]
    mcols = [c["name"] for c in models["versions"][0]["additionalPrinterColumns"]]
    assert mcols[:5] == ["Pipeline", "Source", "Ready", "Cached", "Age"]
    source = models["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["source"]
    assert source["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"


def test_field_descriptions_reach_the_crds() -> None:
    """The models' field descriptions are in the CRDs too (`kubectl explain` shows them)."""
    model = crdgen.render()["imagemodels.yaml"]["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert "Immutable." in model["source"]["description"]
    assert model["optimizations"]["properties"]["fp8"]["description"] == (
        "Lossy, opt-in: fp8 matmuls.")
    assert "gpuMemoryGiB" not in model
    pool = crdgen.render()["generationpools.yaml"]["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"]["properties"]["spec"]["properties"]
    labels = pool["worker"]["properties"]["podLabels"]
    assert labels["maxProperties"] == 32
    assert labels["additionalProperties"]["maxLength"] == 63
    assert "imagegen.dev/pool" in labels["x-kubernetes-validations"][0]["rule"]


def test_exclusive_bounds_become_openapi_v3_booleans() -> None:
    """pydantic's gt/lt (JSON Schema 2020: exclusiveMinimum: 0) is refused by the API server,
    which wants minimum: 0 with exclusiveMinimum: true."""
    node = crdgen._structural({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 2.5})
    assert node["minimum"] == 0 and node["exclusiveMinimum"] is True
    assert node["maximum"] == 2.5 and node["exclusiveMaximum"] is True
    kept = crdgen._structural({"type": "integer", "minimum": 1})
    assert kept == {"type": "integer", "minimum": 1}
