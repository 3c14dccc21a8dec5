"""Request sampler names → diffusers scheduler classes per pipeline family, and a fresh
scheduler per call.

Which names a family accepts is imagegen_api.families.FAMILIES (validation rejects the others
before a job exists); this module says which class each name builds for that family. UNet
families (sdxl, sd15, auto) denoise with the DDPM-style schedulers; SD3 and Flux are
flow-matching models whose schedulers step along sigmas from 1 to 0 (shifted: statically for
SD3, by the pipeline's `mu` for Flux) — a UNet scheduler there breaks the model.

Schedulers keep per-call state (timesteps, step index, multistep history), so a pipeline's own
scheduler must never be shared between calls: `fresh_scheduler` builds a new one from the
model's scheduler config (its betas or shift, prediction type, spacing) for every call.
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
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    LCMScheduler,
)
from imagegen_api.families import FAMILIES

SAMPLER_SCHEDULERS: Mapping[str, type] = MappingProxyType(
    {
        "euler": EulerDiscreteScheduler,
        "euler_a": EulerAncestralDiscreteScheduler,
        "ddim": DDIMScheduler,
        "dpmpp_2m": DPMSolverMultistepScheduler,
        "lcm": LCMScheduler,
    }
)
FLOW_SAMPLER_SCHEDULERS: Mapping[str, type] = MappingProxyType(
    {
        "euler": FlowMatchEulerDiscreteScheduler,
        "heun": FlowMatchHeunDiscreteScheduler,
    }
)
FLOW_FAMILIES = frozenset({"sd3", "flux"})

# Settings a sampler needs whatever the model's scheduler was (DPM-Solver++ 2M is the
# "dpmpp_2m" of other tools: second order, deterministic, the ++ data-prediction variant).
_OVERRIDES: Mapping[str, Mapping[str, Any]] = {
    "dpmpp_2m": {"algorithm_type": "dpmsolver++", "solver_order": 2},
}


def schedulers(family: str) -> Mapping[str, type]:
    """Sampler name → scheduler class for the family's kind of model (flow or UNet)."""
    return FLOW_SAMPLER_SCHEDULERS if family in FLOW_FAMILIES else SAMPLER_SCHEDULERS


def is_flow_scheduler(scheduler: Any) -> bool:
    """Whether a loaded scheduler is a flow-matching one (what sd3 and flux weights ship)."""
    return type(scheduler).__name__.startswith("FlowMatch")


def fresh_scheduler(family: str, sampler: str, base_config: Mapping[str, Any]) -> Any:
    """A new scheduler of the sampler's class for `family`, from a copy of the model's config.

    ValueError names the sampler and the family's samplers when the family cannot use it (a
    request is validated against the same table first, so this is a last guard).
    """
    allowed = FAMILIES[family].samplers
    if sampler not in allowed:
        raise ValueError(f"sampler {sampler!r} cannot be used by a {family} model "
                         f"(allowed: {', '.join(allowed)})")
    cls: Any = schedulers(family)[sampler]
    config = {**dict(base_config), **_OVERRIDES.get(sampler, {})}
    return cls.from_config(config)
