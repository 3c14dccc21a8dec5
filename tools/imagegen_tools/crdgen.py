"""Renders crds/*.yaml from the pydantic spec models: the models are the single source.
A build tool of the repository (tools/, not shipped in the wheel); `make crds` runs it.

    python -m imagegen_tools.crdgen [--root DIR]           write DIR/crds and the install base
    python -m imagegen_tools.crdgen [--root DIR] --check   exit 1 if they differ from the models
    python -m imagegen_tools.crdgen --out DIR ...          write into these directories instead

DIR is the repository root (default: the current directory).

Pydantic's JSON Schema is turned into a Kubernetes *structural* schema: $refs inlined, Optional
collapsed to its type, no additionalProperties next to properties, titles dropped; CEL rules
(x-kubernetes-validations) and list-type markers carried over from the models.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from imagegen_api import naming, specs
from imagegen_api.base import JsonDict, cel
from pydantic import BaseModel

Schema = dict[str, Any]

# Below the repository root. kustomize refuses files outside its directory, so the install base
# holds a generated copy (the chart links to crds/ instead). Both are written and checked here.
CRD_DIRS = (Path("crds"), Path("manifests") / "install" / "crds")

# Keys of a JSON Schema node that a Kubernetes structural schema accepts as they are.
_KEEP = {
    "type", "description", "default", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "minItems", "maxItems",
    "uniqueItems", "format", "nullable", "minProperties", "maxProperties",
}
_X_PREFIX = "x-kubernetes-"

# A GenerationPool's name is part of its children's names (`<pool>-worker-config`), its labels
# (63 characters) and its Kafka topics; 40 leaves room for every suffix.
POOL_NAME_MAX = 40


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _structural(node: Schema) -> Schema:
    """One pydantic schema node → one structural-schema node."""
    node = dict(node)
    # Optional[X] is anyOf [X, null]: the field is simply not required.
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union of {len(branches)} types: {branches}")
        merged = {**branches[0], **{k: v for k, v in node.items() if k != "default"}}
        if node.get("default") is not None:
            merged["default"] = node["default"]
        node = merged
    if "const" in node:
        node["enum"] = [node.pop("const")]
    # JSON Schema 2020 (pydantic's gt/lt) writes the bound in exclusiveMinimum/-Maximum; the
    # API server's OpenAPI v3.0 wants the bound in minimum/maximum and a boolean flag.
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(flag), int | float) and not isinstance(node[flag], bool):
            node[bound] = node.pop(flag)
            node[flag] = True
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    if node.get("default", 0) is None:
        del node["default"]
    if (isinstance(node.get("default"), dict) and node.get("properties")
            and "x-kubernetes-validations" not in node):
        # `{}`: the API server then applies each nested field's own default. Objects with CEL
        # rules keep the full default: the server checks a default against them as written.
        node["default"] = {}
    elif "default" in node:
        node["default"] = _drop_nulls(node["default"])
    out: Schema = {}
    for key, value in node.items():
        if key in _KEEP or key.startswith(_X_PREFIX):
            out[key] = value
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties")
        if props:
            out["properties"] = {name: _structural(sub) for name, sub in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        else:
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                out["additionalProperties"] = _structural(extra)
            else:
                out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = _structural(node.get("items", {"type": "string"}))
    elif kind is None:
        raise ValueError(f"schema node without a type: {node}")
    return out


def model_schema(model: type[BaseModel]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs))


def _column(name: str, path: str, kind: str = "string", priority: int = 0,
            description: str = "") -> Schema:
    col: Schema = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if description:
        col["description"] = description
    return col


AGE = _column("Age", ".metadata.creationTimestamp", "date")

POOL_COLUMNS = [
    _column("Model", ".status.model", description="Default model (first of spec.models)"),
    _column("Ready", ".status.ready", description="Ready workers / desired workers"),
    _column("Warm", ".status.warm.ready", "integer", description="Ready warm workers"),
    _column("Cold", ".status.cold.ready", "integer", description="Ready cold (spot) workers"),
    _column("Queue", ".status.queue.lag", "integer", description="Consumer lag, all tiers"),
    AGE,
    _column("Throughput", ".status.throughput", "number", 1, "Images per minute"),
    _column("Desired", ".status.desired", "string", 1, "Desired warm/cold replicas"),
    _column("Hit-Rate", ".status.cacheHitRate", "string", 1,
            "Cache hit rate of the last hour (hits / lookups)"),
    _column("Images/h", ".status.imagesPerHour", "integer", 1, "Images served in the last hour"),
    _column("Last-Scale", ".status.lastScaleReason", "string", 1, "Why the last scale happened"),
    _column("URL", ".status.gateway.url", "string", 1, "The gateway's in-cluster URL"),
]

MODEL_COLUMNS = [
    _column("Pipeline", ".spec.pipeline"),
    _column("Source", ".spec.source"),
    _column("Ready", ".status.ready", "boolean"),
    _column("Cached", ".status.cached"),
    AGE,
    _column("Used-By", ".status.usedBy", "string", 1, "Pools serving this model"),
]


def _crd(kind: str, plural: str, short: str, spec_model: type[BaseModel],
         status_model: type[BaseModel], columns: list[Schema],
         root_rules: list[JsonDict], description: str) -> Schema:
    status = model_schema(status_model)
    # Status is written only by the operator; unknown keys are kept so an older operator
    # replica never loses what a newer one wrote during a rolling upgrade.
    status["x-kubernetes-preserve-unknown-fields"] = True
    root: Schema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(spec_model),
            "status": status,
        },
    }
    if root_rules:
        root["x-kubernetes-validations"] = root_rules
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{naming.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "imagegen-operator"},
        },
        "spec": {
            "group": naming.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": [naming.CATEGORY],
            },
            "versions": [
                {
                    "name": naming.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render() -> dict[str, Schema]:
    """File name → CRD object."""
    pool_name_rule = cel(
        f"self.metadata.name.size() <= {POOL_NAME_MAX}",
        f"metadata.name must be at most {POOL_NAME_MAX} characters: it prefixes the pool's "
        "Deployments, ConfigMap, labels and Kafka topics",
    )
    return {
        "imagemodels.yaml": _crd(
            naming.IMAGEMODEL_KIND, naming.IMAGEMODEL_PLURAL, "im", specs.ImageModelSpec,
            specs.ImageModelStatus, MODEL_COLUMNS, [],
            "One diffusion model: where its weights live, its defaults and limits, LoRA adapters.",
        ),
        "generationpools.yaml": _crd(
            naming.GENERATIONPOOL_KIND, naming.GENERATIONPOOL_PLURAL, "gp",
            specs.GenerationPoolSpec, specs.GenerationPoolStatus, POOL_COLUMNS,
            [pool_name_rule],
            "A pool of GPU workers serving ImageModels from Kafka: warm on-demand workers, "
            "cold spot workers that scale to zero, priority tiers, batching, cache, storage.",
        ),
    }


def dump(obj: Schema) -> str:
    header = "# Generated by `python -m imagegen_tools.crdgen` from api/imagegen_api/specs.py.\n"
    header += "# Do not edit: change the models and run `make crds`.\n"
    return header + yaml.safe_dump(obj, sort_keys=False, width=100)


def write_or_check(path: Path, text: str, check: bool) -> bool:
    """Write a generated file, or with `check` only compare it; True when it was stale."""
    if check:
        return not path.exists() or path.read_text() != text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagegen_tools.crdgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="repository root holding crds/ and manifests/install/crds/")
    parser.add_argument("--out", type=Path, action="append",
                        help="output directory (repeatable; default: the two under --root)")
    args = parser.parse_args(argv)
    stale: list[str] = []
    outs: list[Path] = args.out or [args.root / d for d in CRD_DIRS]
    for (name, crd), out in ((item, out) for item in render().items() for out in outs):
        path: Path = out / name
        if write_or_check(path, dump(crd), args.check):
            stale.append(str(path))
    if stale:
        print("CRDs out of date (run `make crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
