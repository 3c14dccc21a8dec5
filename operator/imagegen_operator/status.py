"""Observations → the status a person reads with kubectl. Pure: no API calls here.

Conditions follow the Kubernetes convention: lastTransitionTime only moves when the status value
changes, and every condition carries the generation it was computed for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagegen_api.messages import Heartbeat
from imagegen_api.specs import (
    Condition,
    ConditionStatus,
    GatewayStatus,
    GenerationPoolSpec,
    GenerationPoolStatus,
    ImageModelStatus,
    QueueStatus,
    RolePoolStatus,
)

from .problems import Problem
from .serving import Served

READY = "Ready"
SCALING = "Scaling"
QUEUE_METRICS = "QueueMetricsAvailable"
DEGRADED = "Degraded"


def iso(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RoleObservation:
    """One worker Deployment as read from the API (absent Deployment: all zero)."""

    desired: int = 0
    replicas: int = 0
    ready: int = 0
    # Pods waiting for a GPU node: expected while the cluster autoscaler adds capacity.
    pending: int = 0


@dataclass(frozen=True)
class QueueObservation:
    lag_by_tier: dict[str, int] = field(default_factory=dict)
    partitions: int = 0
    # Seconds the oldest pending request of each tier has waited (scaling/backlog_age).
    oldest_by_tier: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # lag could not be read; the last good numbers are kept

    @property
    def lag(self) -> int:
        return sum(self.lag_by_tier.values())


@dataclass(frozen=True)
class PoolObservation:
    generation: int | None
    warm: RoleObservation
    cold: RoleObservation
    queue: QueueObservation
    heartbeats: Sequence[Heartbeat] = ()
    # Problems that make the pool Degraded (missing model, Kafka unreachable, bad spec); the first
    # one's reason becomes the Degraded condition's reason.
    problems: Sequence[Problem] = ()
    scaled: bool = False
    scale_reason: str | None = None
    scaling_held: bool = False
    # Partitions whose backlog does not move while workers are ready (readable lines).
    stalled: Sequence[str] = ()
    # Images and cache lookups of the last hour (serving.py); None: not computed this pass.
    served: Served | None = None
    # The gateway's URL and pods when spec.gateway is enabled; None: no gateway.
    gateway: GatewayStatus | None = None


def merge_conditions(old: Iterable[Condition], new: Iterable[Condition],
                     now: datetime) -> list[Condition]:
    """New conditions replace old ones of the same type; the transition time is kept when the
    status value did not change."""
    previous = {c.type: c for c in old}
    merged: list[Condition] = []
    for cond in new:
        before = previous.get(cond.type)
        since = (before.last_transition_time
                 if before is not None and before.status == cond.status else None)
        merged.append(cond.model_copy(update={"last_transition_time": since or iso(now)}))
    return merged


def _cond(kind: str, status: ConditionStatus, reason: str, message: str,
          generation: int | None) -> Condition:
    return Condition(type=kind, status=status, reason=reason, message=message,
                     observed_generation=generation)


def throughput_per_minute(heartbeats: Iterable[Heartbeat], now: float) -> tuple[float, int]:
    """Images per minute summed over fresh heartbeats, and how many fresh workers are busy."""
    fresh = [hb for hb in heartbeats if hb.is_fresh(now)]
    rate = sum(hb.images_per_second for hb in fresh) * 60.0
    busy = sum(1 for hb in fresh if hb.in_flight > 0)
    return round(rate, 2), busy


def pool_status(spec: GenerationPoolSpec, obs: PoolObservation, old: GenerationPoolStatus | None,
                now: datetime) -> GenerationPoolStatus:
    old = old or GenerationPoolStatus()
    gen = obs.generation
    desired = obs.warm.desired + obs.cold.desired
    ready = obs.warm.ready + obs.cold.ready
    rate, busy = throughput_per_minute(obs.heartbeats, now.timestamp())
    conditions: list[Condition] = []

    floor = spec.warm.min_replicas
    problems = "; ".join(p.message for p in obs.problems)
    # With its gateway enabled, a pool is ready only when it answers HTTP too.
    gw = obs.gateway
    gateway_ready = not spec.gateway.enabled or (gw is not None and gw.ready > 0)
    gateway_note = (f", {gw.ready}/{gw.replicas} gateway pods ready"
                    if spec.gateway.enabled and gw is not None else "")
    if obs.problems:
        conditions.append(_cond(READY, "False", "Degraded", problems, gen))
    elif obs.warm.ready >= floor and (ready > 0 or desired == 0) and not gateway_ready:
        conditions.append(_cond(READY, "False", "WaitingForGateway",
                                f"{ready}/{desired} workers ready, no gateway pod ready "
                                f"({gw.replicas if gw else 0} desired): the HTTP API is down",
                                gen))
    elif obs.warm.ready >= floor and (ready > 0 or desired == 0):
        conditions.append(_cond(READY, "True", "WorkersReady",
                                f"{ready}/{desired} workers ready (warm minimum {floor})"
                                f"{gateway_note}", gen))
    else:
        waiting = (f"; {obs.warm.pending + obs.cold.pending} pod(s) Pending for a node"
                   if obs.warm.pending + obs.cold.pending else "")
        conditions.append(_cond(READY, "False", "WaitingForWorkers",
                                f"{obs.warm.ready}/{floor} warm workers ready{waiting}", gen))

    if obs.scaling_held:
        conditions.append(_cond(SCALING, "False", "HoldingOnMissingMetrics",
                                obs.scale_reason or "queue lag unknown: replicas held", gen))
    elif ready != desired:
        reason = "ScalingUp" if desired > ready else "ScalingDown"
        conditions.append(_cond(SCALING, "True", reason,
                                f"{ready} ready, {desired} desired"
                                + (f": {obs.scale_reason}" if obs.scale_reason else ""), gen))
    else:
        conditions.append(_cond(SCALING, "False", "Stable",
                                f"{desired} workers for lag {obs.queue.lag}", gen))

    if obs.queue.error:
        conditions.append(_cond(QUEUE_METRICS, "False", "LagUnavailable", obs.queue.error, gen))
    else:
        conditions.append(_cond(QUEUE_METRICS, "True", "LagRead",
                                f"lag {obs.queue.lag} over {obs.queue.partitions} partitions",
                                gen))

    if obs.problems:
        conditions.append(_cond(DEGRADED, "True", obs.problems[0].reason,
                                "; ".join([problems, *obs.stalled]), gen))
    elif obs.stalled:
        conditions.append(_cond(DEGRADED, "True", "PartitionStalled",
                                "no progress while workers are ready: " + ", ".join(obs.stalled),
                                gen))
    else:
        conditions.append(_cond(DEGRADED, "False", "AsExpected", "no known problems", gen))

    lag_by_tier = obs.queue.lag_by_tier if not obs.queue.error else old.queue.lag_by_tier
    partitions = obs.queue.partitions if not obs.queue.error else old.queue.partitions
    oldest = ({t: int(s) for t, s in obs.queue.oldest_by_tier.items()}
              if not obs.queue.error else old.queue.oldest_seconds_by_tier)
    return GenerationPoolStatus(
        observed_generation=gen,
        model=spec.default_model,
        ready=f"{ready}/{desired}",
        desired=f"{obs.warm.desired}/{obs.cold.desired}",
        replicas=obs.warm.replicas + obs.cold.replicas,
        ready_replicas=ready,
        warm=RolePoolStatus(desired=obs.warm.desired, replicas=obs.warm.replicas,
                            ready=obs.warm.ready),
        cold=RolePoolStatus(desired=obs.cold.desired, replicas=obs.cold.replicas,
                            ready=obs.cold.ready),
        queue=QueueStatus(lag=sum(lag_by_tier.values()), lag_by_tier=dict(lag_by_tier),
                          partitions=partitions, stalled_partitions=list(obs.stalled),
                          oldest_seconds_by_tier=dict(oldest)),
        throughput=rate,
        busy_workers=busy,
        images_per_hour=obs.served.images if obs.served else old.images_per_hour,
        cache_hit_rate=obs.served.hit_rate_text() if obs.served else old.cache_hit_rate,
        cache_hit_ratio=(_ratio(obs.served.hit_rate) if obs.served else old.cache_hit_ratio),
        last_scale_time=iso(now) if obs.scaled else old.last_scale_time,
        last_scale_reason=obs.scale_reason if obs.scaled else old.last_scale_reason,
        gateway=obs.gateway,
        conditions=merge_conditions(old.conditions, conditions, now),
    )


def _ratio(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 4)


def invalid_spec_conditions(message: str, generation: int | None,
                            old: Iterable[Condition], now: datetime) -> list[Condition]:
    """A spec the models refuse (the CRD schema lets little through): not Ready, Degraded."""
    return merge_conditions(old, [
        _cond(READY, "False", "InvalidSpec", message, generation),
        _cond(DEGRADED, "True", "InvalidSpec", message, generation),
    ], now)


def model_status(generation: int | None, *, resolved_source: str, cached: str,
                 used_by: Sequence[str], problems: Sequence[str], deleting_blocked: str | None,
                 old: ImageModelStatus | None, now: datetime) -> ImageModelStatus:
    """`cached`: n/a (no prefetch) | Pending | InProgress | Ready | Failed."""
    old = old or ImageModelStatus()
    conditions: list[Condition] = []
    if problems:
        conditions.append(_cond(READY, "False", "Invalid", "; ".join(problems), generation))
    elif cached in ("Pending", "InProgress"):
        conditions.append(_cond(READY, "False", "Prefetching",
                                f"prefetch {cached.lower()}: weights are being downloaded",
                                generation))
    elif cached == "Failed":
        conditions.append(_cond(READY, "False", "PrefetchFailed",
                                "the prefetch Job failed; see its pod logs", generation))
    else:
        conditions.append(_cond(READY, "True", "Resolved", f"source {resolved_source}",
                                generation))
    conditions.append(_cond("Cached", "True" if cached == "Ready" else "False",
                            "Prefetched" if cached == "Ready" else f"Prefetch{cached}"
                            if cached != "n/a" else "NoPrefetch",
                            "weights in the cache volume" if cached == "Ready"
                            else "no prefetch configured" if cached == "n/a"
                            else f"prefetch {cached}", generation))
    if deleting_blocked:
        conditions.append(_cond("InUse", "True", "DeletionBlocked", deleting_blocked, generation))
    elif used_by:
        conditions.append(_cond("InUse", "True", "ServedByPools",
                                "served by " + ", ".join(used_by), generation))
    else:
        conditions.append(_cond("InUse", "False", "Unused", "no pool serves this model",
                                generation))
    return ImageModelStatus(
        observed_generation=generation,
        ready=not problems and cached not in ("Pending", "InProgress", "Failed"),
        cached=cached,
        resolved_source=resolved_source,
        used_by=list(used_by),
        conditions=merge_conditions(old.conditions, conditions, now),
    )


def status_differs(desired: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Would merge-patching `desired` onto `current` change anything? Field by field, nested
    objects recursively (a merge patch keeps fields it does not name), lists and values as a
    whole; an absent field and null are the same. No change: no PATCH, and no watch event for
    every peer of the pool."""
    current = current or {}
    for key, want in desired.items():
        have = current.get(key)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            if status_differs(want, have):
                return True
        elif want != have and not (want is None and key not in current):
            return True
    return False
