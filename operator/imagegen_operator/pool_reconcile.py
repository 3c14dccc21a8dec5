"""One reconcile pass of a GenerationPool: observe → plan → apply.

Called by the Kopf handlers (handlers.py) on every change and by the per-pool timer every
pollSeconds. `pool_observe` gathers the state (indexes, Kafka, Redis), `pool_plan.plan` decides
everything from plain data (pure, unit-tested), `pool_apply` writes. The pool's memory is one
frozen value: the pass returns the next one, the handler keeps it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagegen_api.specs import AutoscalingSpec
from pydantic import ValidationError

from . import pool_apply, pool_observe, pool_plan
from .pool_observe import Indexes
from .pool_plan import PassEvent, PoolMemory
from .problems import Problem
from .runtime import Runtime

__all__ = ["Indexes", "PassEvent", "PassResult", "PoolMemory", "is_due", "reconcile"]


@dataclass(frozen=True)
class PassResult:
    events: tuple[PassEvent, ...]
    problems: tuple[Problem, ...]
    memory: PoolMemory


def is_due(mem: PoolMemory, spec: Mapping[str, Any], generation: int | None, now: float) -> bool:
    """Timer gate: a pass every autoscaling.pollSeconds, or at once after a spec change."""
    if generation != mem.last_generation:
        return True
    try:
        poll = AutoscalingSpec.model_validate(spec.get("autoscaling") or {}).poll_seconds
    except ValidationError:
        return True  # the pass reports the invalid spec
    return now - mem.last_poll >= poll - 0.05


async def reconcile(rt: Runtime, body: Mapping[str, Any], mem: PoolMemory,
                    indexes: Indexes) -> PassResult:
    started = time.monotonic()
    meta = body["metadata"]
    state = await pool_observe.observe(rt, body, mem, indexes, time.time())
    c = rt.config
    settings = pool_plan.PlanSettings(defaults=c.defaults, stall_seconds=c.stall_seconds,
                                      allowed_images=c.allowed_images)
    plan = pool_plan.plan(state, mem, settings)
    plan = await pool_apply.apply(rt, meta["namespace"], meta["name"], plan)
    rt.metrics.reconcile_seconds.labels("GenerationPool").observe(time.monotonic() - started)
    return PassResult(events=plan.events, problems=plan.problems, memory=plan.memory)
