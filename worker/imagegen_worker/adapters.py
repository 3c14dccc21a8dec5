"""A request's `loras` against the model's declared adapters: the set a batch activates.

Pure; called by `validate`. The result is canonical (sorted by name, zero weights dropped: an
adapter at weight 0 draws what no adapter draws), so equal sets share batches and cache keys.
A request without `loras` gets the model's declared adapters at their declared weights: what a
model declaring adapters served before requests could choose, so existing clients see no change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from imagegen_api.messages import LORA_WEIGHT_RANGE, LoraChoice
from imagegen_api.specs import LoraAdapter

Adapters = tuple[tuple[str, float], ...]  # pipelines.jobs.Adapters


@dataclass(frozen=True)
class AdapterError:
    field: str
    message: str
    limit: str


def resolve(choices: list[LoraChoice] | None, declared: list[LoraAdapter]
            ) -> Adapters | AdapterError:
    if choices is None:
        return tuple(sorted((a.name, float(a.weight)) for a in declared if a.weight))
    names = [a.name for a in declared]
    lo, hi = LORA_WEIGHT_RANGE
    seen: dict[str, float] = {}
    for i, choice in enumerate(choices):
        if choice.name not in names:
            return AdapterError(
                f"loras[{i}].name", f"loras[{i}].name {choice.name!r} is not an adapter of "
                "this model", "one of: " + (", ".join(names) or "(the model declares none)"))
        if choice.name in seen:
            return AdapterError(f"loras[{i}].name", f"loras[{i}].name {choice.name!r} is "
                                "named twice", "each adapter once")
        if not math.isfinite(choice.weight) or not lo <= choice.weight <= hi:
            return AdapterError(f"loras[{i}].weight", f"loras[{i}].weight {choice.weight} is "
                                f"outside [{lo:g}, {hi:g}]", f"{lo:g}..{hi:g}")
        seen[choice.name] = float(choice.weight)
    return tuple(sorted((n, w) for n, w in seen.items() if w))

