"""Base model for every Kubernetes-facing schema: camelCase on the wire, snake_case in Python,
frozen (specs are values), unknown fields refused."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError
from pydantic.alias_generators import to_camel

__all__ = ["JsonDict", "KubeModel", "cel", "first_error"]

# A JSON object, as pydantic's json_schema_extra takes it.
JsonDict = dict[str, JsonValue]


class KubeModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase dict as it appears in YAML / the API, defaults included."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One CEL rule (x-kubernetes-validations entry) for the generated CRD schema."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def first_error(err: ValidationError, prefix: str = "spec") -> str:
    """`spec.warm.minReplicas: <pydantic's message>` for the first error: the field named the
    way a manifest spells it (aliases are camelCase)."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{prefix}.{where}: {first['msg']}" if where else f"{prefix}: {first['msg']}"
