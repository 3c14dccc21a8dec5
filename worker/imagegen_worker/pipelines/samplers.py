"""Request sampler names → diffusers scheduler classes, and a fresh scheduler per call.

Schedulers keep per-call state (timesteps, step index, multistep history), so a pipeline's own
scheduler must never be shared between calls: `fresh_scheduler` builds a new one from the
model's scheduler config (its betas, prediction type, spacing) for every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
)

SAMPLER_SCHEDULERS: Mapping[str, type] = MappingProxyType(
    {
        "euler": EulerDiscreteScheduler,
        "euler_a": EulerAncestralDiscreteScheduler,
        "ddim": DDIMScheduler,
        "dpmpp_2m": DPMSolverMultistepScheduler,
        "lcm": LCMScheduler,
    }
)

# Settings a sampler needs whatever the model's scheduler was (DPM-Solver++ 2M is the
# "dpmpp_2m" of other tools: second order, deterministic, the ++ data-prediction variant).
_OVERRIDES: Mapping[str, Mapping[str, Any]] = {
    "dpmpp_2m": {"algorithm_type": "dpmsolver++", "solver_order": 2},
}


def fresh_scheduler(sampler: str, base_config: Mapping[str, Any]) -> Any:
    """A new scheduler of the sampler's class built from a copy of the model's config."""
    try:
        cls: Any = SAMPLER_SCHEDULERS[sampler]
    except KeyError:
        known = ", ".join(SAMPLER_SCHEDULERS)
        raise ValueError(f"unknown sampler {sampler!r} (known: {known})") from None
    config = {**dict(base_config), **_OVERRIDES.get(sampler, {})}
    return cls.from_config(config)
