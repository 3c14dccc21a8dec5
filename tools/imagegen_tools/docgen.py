"""Renders docs/reference.md, the field reference of the two custom resources, from the CRDs.
A build tool of the repository (tools/, not shipped in the wheel); `make lint` checks it.

    python -m imagegen_tools.docgen [--root DIR]           write DIR/docs/reference.md
    python -m imagegen_tools.docgen [--root DIR] --check   exit 1 if it is out of date
    python -m imagegen_tools.docgen --out FILE             write FILE instead

The input is `crdgen.render()`, itself generated from the pydantic models in
api/imagegen_api/specs.py, so the reference shows exactly what the API server enforces: one table
per object (field path, type, default, limits, description) and the CEL rules with their messages.
Descriptions are the models' own (field descriptions and model docstrings, which the CRDs carry
too, for `kubectl explain`); a field without one gets an empty cell.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagegen_api import naming

from imagegen_tools import crdgen

Schema = dict[str, Any]

# Below the repository root.
REFERENCE = Path("docs") / "reference.md"

_LIMIT_KEYS = (
    ("minimum", "min"),
    ("exclusiveMinimum", "> "),
    ("maximum", "max"),
    ("exclusiveMaximum", "< "),
    ("multipleOf", "multipleOf"),
    ("minLength", "minLength"),
    ("maxLength", "maxLength"),
    ("minItems", "minItems"),
    ("maxItems", "maxItems"),
)


@dataclass
class Rule:
    path: str
    rule: str
    message: str
    field_path: str | None


@dataclass
class Table:
    path: str
    description: str
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class KindDoc:
    kind: str
    short: str
    description: str
    tables: list[Table] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return f"`{text}`" if text != "" else '`""`'


def _type(node: Schema) -> str:
    kind = str(node.get("type", ""))
    if kind == "array":
        return f"[]{_type(node.get('items', {}))}"
    if kind == "object" and not node.get("properties"):
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return f"map[string]{_type(extra)}"
        return "object (free-form)"
    return kind


def _default(node: Schema) -> str:
    if "default" not in node:
        return ""
    value = node["default"]
    if value == {} and node.get("properties"):
        return "each field's default"
    return _code(value)


def _limits(node: Schema) -> str:
    parts: list[str] = []
    for key, label in _LIMIT_KEYS:
        if key in node:
            sep = "" if label.endswith(" ") else " "
            parts.append(f"{label}{sep}{node[key]}")
    if "enum" in node:
        parts.append("one of " + ", ".join(_code(v) for v in node["enum"]))
    if "pattern" in node:
        parts.append(f"pattern {_code(node['pattern'])}")
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = ", ".join(node.get("x-kubernetes-list-map-keys", []))
        parts.append(f"unique by {keys}")
    elif list_type == "set":
        parts.append("unique items")
    return "; ".join(parts)


def _object_node(node: Schema) -> Schema | None:
    """The object whose fields get their own table: the node itself or its array items."""
    if node.get("type") == "object" and node.get("properties"):
        return node
    items = node.get("items")
    if node.get("type") == "array" and isinstance(items, dict):
        return _object_node(items)
    return None


def _describe(node: Schema) -> str:
    return str(node.get("description", ""))


def _rules(path: str, node: Schema, doc: KindDoc) -> None:
    for rule in node.get("x-kubernetes-validations", []):
        doc.rules.append(Rule(path, rule["rule"], rule["message"], rule.get("fieldPath")))


def _walk(kind: str, path: str, node: Schema, doc: KindDoc) -> None:
    """Adds the table of the object at `path` (and of every object below it) to `doc`."""
    table = Table(path, _describe(node))
    doc.tables.append(table)
    children: list[tuple[str, Schema]] = []
    needed = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        sub_path = f"{path}.{name}"
        _rules(sub_path, sub, doc)
        type_text = _type(sub)
        obj = _object_node(sub)
        if obj is not None:
            obj_path = sub_path if obj is sub else f"{sub_path}[]"
            if obj is not sub:
                _rules(obj_path, obj, doc)
            children.append((obj_path, obj))
            type_text = f"[{type_text}](#{_anchor(f'{kind} {obj_path}')})"
        if name in needed:
            type_text += " (required)"
        description = _describe(sub)
        table.rows.append([f"`{sub_path}`", type_text, _default(sub), _limits(sub), description])
    for obj_path, obj in children:
        _walk(kind, obj_path, obj, doc)


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, spaces to dashes, punctuation except - and _ dropped."""
    out = []
    for ch in title.lower():
        if ch.isalnum() or ch in "-_":
            out.append(ch)
        elif ch == " ":
            out.append("-")
    return "".join(out)


def collect() -> list[KindDoc]:
    docs: list[KindDoc] = []
    for crd in crdgen.render().values():
        spec = crd["spec"]
        kind = spec["names"]["kind"]
        root = spec["versions"][0]["schema"]["openAPIV3Schema"]
        doc = KindDoc(kind, spec["names"]["shortNames"][0], root.get("description", ""))
        _rules("(resource)", root, doc)
        for part in ("spec", "status"):
            _rules(part, root["properties"][part], doc)
            _walk(kind, part, root["properties"][part], doc)
        docs.append(doc)
    return docs


def render() -> str:
    lines = [
        "<!-- Generated by `python -m imagegen_tools.docgen` from the models in specs.py. -->",
        "<!-- Do not edit: change the models (descriptions included) and run `make crds`. -->",
        "",
        "# Custom resource reference",
        "",
        f"API group `{naming.GROUP}`, version `{naming.VERSION}`. Both kinds are namespaced and "
        "have a status subresource; `status` is written by the operator only.",
        "",
        "Field paths use the camelCase names of the YAML. `[]` marks the items of a list. "
        "A default of *each field's default* means an absent object is filled in field by field. "
        "Descriptions are given where the models document a field; an empty cell means none.",
        "",
    ]
    docs = collect()
    lines.append("Contents:")
    lines.append("")
    for doc in docs:
        lines.append(f"- [{doc.kind}](#{_anchor(doc.kind)}) (`{doc.short}`)")
        for table in doc.tables:
            title = f"{doc.kind} {table.path}"
            lines.append(f"  - [`{table.path}`](#{_anchor(title)})")
        lines.append(f"  - [Validation rules](#{_anchor(doc.kind + ' validation rules')})")
    lines.append("")
    for doc in docs:
        lines += [f"## {doc.kind}", "", doc.description, ""]
        for table in doc.tables:
            lines += [f"### {doc.kind} {table.path}", ""]
            if table.description:
                lines += [table.description, ""]
            lines += [
                "| Field | Type | Default | Limits | Description |",
                "|---|---|---|---|---|",
            ]
            for row in table.rows:
                lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
            lines.append("")
        lines += [
            f"### {doc.kind} validation rules",
            "",
            "CEL rules (`x-kubernetes-validations`) checked by the API server on create and "
            "update; the operator checks the same cross-field rules when it parses a resource.",
            "",
            "| On | Rule | Message |",
            "|---|---|---|",
        ]
        for rule in doc.rules:
            where = f"`{rule.path}`"
            if rule.field_path:
                where += f" (reported at `{rule.field_path}`)"
            lines.append(f"| {_cell(where)} | {_cell(_code(rule.rule))} | {_cell(rule.message)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagegen_tools.docgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="repository root holding docs/reference.md")
    parser.add_argument("--out", type=Path, default=None,
                        help="output file (default: docs/reference.md under --root)")
    args = parser.parse_args(argv)
    out: Path = args.out or args.root / REFERENCE
    if crdgen.write_or_check(out, render(), args.check):
        print(f"{out} is out of date (run `make crds`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
