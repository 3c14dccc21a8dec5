"""One reconcile pass of a GenerationPool: observe, decide, apply, report.

Called by the Kopf handlers on every change and by the per-pool timer every pollSeconds. The
decisions are pure functions (builders, scaling.policy, status); this module only gathers their
inputs and applies their outputs through k8s / Kafka clients.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagegen_api import naming
from imagegen_api.base import first_error
from imagegen_api.messages import Heartbeat
from imagegen_api.specs import (
    AutoscalingSpec,
    GenerationPoolSpec,
    GenerationPoolStatus,
    ImageModelSpec,
)
from pydantic import ValidationError

from . import builders
from .k8s import KubeError
from .kafka_topics import KafkaUnavailable
from .runtime import Runtime
from .scaling.drain_order import DELETION_COST, WorkerPod, deletion_costs
from .scaling.kafka_lag import LagUnavailable
from .scaling.lag import LagSnapshot, Stall, stalled_for, track_stalls
from .scaling.policy import Decision, Observed, ScalerState, decide
from .status import (
    PoolObservation,
    QueueObservation,
    RoleObservation,
    invalid_spec_conditions,
    pool_status,
)

log = logging.getLogger(__name__)


@dataclass
class PoolMemory:
    """What the operator remembers about one pool between passes (lost on restart: the
    Deployments' replicas are re-read, so a restart never resets the pool)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    scaler: ScalerState = field(default_factory=ScalerState)
    topics_ensured: tuple[str, tuple[str, ...], int] | None = None
    last_poll: float = 0.0
    last_generation: int | None = None
    # Failures already announced by an Event: a Warning on the first failure, not every poll.
    lag_failing: bool = False
    kafka_failing: bool = False
    # Partitions with a backlog: (committed offset, since when it has not moved).
    stalls: dict[tuple[str, int], tuple[int | None, float]] = field(default_factory=dict)
    stalled_reported: tuple[str, ...] = ()


@dataclass(frozen=True)
class PassEvent:
    """An Event the handler posts on the pool (Kopf owns the event API)."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class PassResult:
    events: list[PassEvent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def is_due(mem: PoolMemory, spec: Mapping[str, Any], generation: int | None, now: float) -> bool:
    """Timer gate: a pass every autoscaling.pollSeconds, or at once after a spec change."""
    if generation != mem.last_generation:
        return True
    try:
        poll = AutoscalingSpec.model_validate(spec.get("autoscaling") or {}).poll_seconds
    except ValidationError:
        return True  # the pass reports the invalid spec
    return now - mem.last_poll >= poll - 0.05


def _moves(observed: Observed, decision: Decision) -> list[tuple[str, int, int]]:
    """(role, replicas before, after) of each role the decision changes."""
    return [(role, before, after) for role, before, after in (
        (naming.ROLE_WARM, observed.warm_replicas, decision.warm),
        (naming.ROLE_COLD, observed.cold_replicas, decision.cold)) if before != after]


def _role(dep: Mapping[str, Any] | None, pending: int) -> RoleObservation:
    if dep is None:
        return RoleObservation()
    st = dep.get("status") or {}
    return RoleObservation(
        desired=int((dep.get("spec") or {}).get("replicas") or 0),
        replicas=int(st.get("replicas") or 0),
        ready=int(st.get("readyReplicas") or 0),
        pending=pending,
    )


async def _load_models(rt: Runtime, namespace: str, spec: GenerationPoolSpec,
                       problems: list[str]) -> dict[str, ImageModelSpec]:
    models: dict[str, ImageModelSpec] = {}
    for name in spec.models:
        obj = await rt.kube.get(naming.API_VERSION, naming.IMAGEMODEL_KIND, namespace, name)
        if obj is None:
            problems.append(f"ImageModel {name!r} not found in namespace {namespace}")
            continue
        try:
            models[name] = ImageModelSpec.model_validate(obj.get("spec") or {})
        except ValidationError as err:
            problems.append(f"ImageModel {name!r} is invalid: {first_error(err)}")
    return models


async def _resolve(rt: Runtime, namespace: str, spec: GenerationPoolSpec) -> tuple[
        str | None, str | None]:
    """Kafka bootstrap and Redis URL as the operator itself must use them."""
    q, c = spec.queue, spec.cache
    bootstrap = q.bootstrap_servers
    if bootstrap is None and q.bootstrap_servers_from is not None:
        bootstrap = await _read_ref(rt, namespace, q.bootstrap_servers_from)
    redis_url = c.redis_url
    if redis_url is None and c.redis_url_from is not None:
        redis_url = await _read_ref(rt, namespace, c.redis_url_from)
    d = rt.config.defaults
    return bootstrap or d.kafka_bootstrap, redis_url or d.redis_url


async def _read_ref(rt: Runtime, namespace: str, ref: Any) -> str:
    if ref.secret_key_ref is not None:
        return await rt.kube.read_key("Secret", namespace, ref.secret_key_ref.name,
                                      ref.secret_key_ref.key)
    return await rt.kube.read_key("ConfigMap", namespace, ref.config_map_key_ref.name,
                                  ref.config_map_key_ref.key)


def _per_worker_rate(heartbeats: list[Heartbeat]) -> float | None:
    """Images per second of one busy worker, from workers that are generating; None if none."""
    rates = [hb.images_per_second for hb in heartbeats if hb.images_per_second > 0]
    return sum(rates) / len(rates) if rates else None


async def reconcile(rt: Runtime, body: Mapping[str, Any], mem: PoolMemory) -> PassResult:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = meta.get("generation")
    result = PassResult()
    started = time.monotonic()
    now = time.time()
    old_status: GenerationPoolStatus | None
    try:
        old_status = GenerationPoolStatus.model_validate(body.get("status") or {})
    except ValidationError:
        old_status = None
    try:
        spec = GenerationPoolSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        # The CRD schema refuses most of this at apply time; this catches what slips through.
        result.problems.append(first_error(err))
        conditions = invalid_spec_conditions(
            result.problems[0], generation, old_status.conditions if old_status else [],
            datetime.now(UTC))
        await rt.kube.patch_status(
            naming.API_VERSION, naming.GENERATIONPOOL_KIND, namespace, name,
            {"observedGeneration": generation,
             "conditions": [c.to_wire() for c in conditions]})
        return result

    problems = result.problems
    models = await _load_models(rt, namespace, spec, problems)
    try:
        bootstrap, redis_url = await _resolve(rt, namespace, spec)
    except KubeError as err:
        problems.append(f"spec.queue/cache reference: {err}")
        bootstrap, redis_url = None, None

    # Kafka topics: created once per (bootstrap, names, partitions); retried until it works.
    topics = builders.pool_topics(namespace, name, spec)
    lag: LagSnapshot | None = None
    lag_error: str | None = None
    if bootstrap is None:
        problems.append(f"no Kafka bootstrap: set spec.queue.bootstrapServers or the operator's "
                        f"{naming.ENV_KAFKA_BOOTSTRAP}")
        lag_error = "no Kafka bootstrap servers configured"
    else:
        key = (bootstrap, tuple(t.name for t in topics), spec.queue.partitions)
        if mem.topics_ensured != key:
            try:
                actions = await rt.topics(bootstrap).ensure(topics)
                mem.topics_ensured = key
                for action in actions:
                    result.events.append(PassEvent("Normal", "TopicsReady", action))
                mem.kafka_failing = False
            except KafkaUnavailable as err:
                problems.append(str(err))
                if not mem.kafka_failing:
                    result.events.append(PassEvent("Warning", "KafkaUnavailable", str(err)))
                mem.kafka_failing = True
        try:
            lag = await rt.lag(bootstrap).read(naming.consumer_group(namespace, name),
                                               builders.tier_topics(namespace, name, spec))
            rt.metrics.lag_read_seconds.observe(lag.read_ms / 1000)
        except LagUnavailable as err:
            lag_error = str(err)

    heartbeats: list[Heartbeat] = []
    if redis_url:
        try:
            heartbeats = await rt.heartbeats(redis_url).read(namespace, name, now)
        except Exception as err:  # heartbeats only feed throughput; never block a pass
            log.warning("heartbeats of %s/%s unreadable: %s", namespace, name, err)

    deps = {role: await rt.kube.get("apps/v1", "Deployment", namespace,
                                    naming.deployment_name(name, role))
            for role in naming.ROLES}
    pods = await rt.kube.list("v1", "Pod", namespace, {naming.LABEL_POOL: name})
    pending = {role: sum(1 for p in pods
                         if (p.get("metadata", {}).get("labels") or {}).get(naming.LABEL_ROLE)
                         == role and (p.get("status") or {}).get("phase") == "Pending")
               for role in naming.ROLES}
    warm_obs = _role(deps[naming.ROLE_WARM], pending[naming.ROLE_WARM])
    cold_obs = _role(deps[naming.ROLE_COLD], pending[naming.ROLE_COLD])

    # A backlog that does not move while workers are ready: say so (not while none is ready:
    # then the pool is waiting for workers, which the Ready condition already tells).
    stalls: list[Stall] = []
    if lag is not None:
        mem.stalls = track_stalls(mem.stalls, lag, now)
        if warm_obs.ready + cold_obs.ready > 0:
            # A tier may wait up to its maxWaitSeconds by design (weights + starvation guard).
            waits = {naming.tier_topic(namespace, name, t.name): 1.5 * t.max_wait_seconds
                     for t in spec.queue.tiers}
            stalls = stalled_for(mem.stalls, lag, now, rt.config.stall_seconds, waits)
        else:
            mem.stalls = {}
    stalled = [str(s) for s in stalls]
    where = tuple(s.where for s in stalls)
    if stalls and where != mem.stalled_reported:
        result.events.append(PassEvent(
            "Warning", "PartitionStalled",
            "committed offsets not moving while workers are ready (hung worker or a batch "
            "far slower than expected): " + ", ".join(stalled)))
    mem.stalled_reported = where

    observed = Observed(
        warm_replicas=(warm_obs.desired if deps[naming.ROLE_WARM] is not None
                       else spec.warm.min_replicas),
        warm_ready=warm_obs.ready,
        cold_replicas=cold_obs.desired,
        cold_ready=cold_obs.ready,
        throughput_per_worker=_per_worker_rate(heartbeats),
    )
    decision = decide(spec, lag, observed, mem.scaler, now, lag_error)
    mem.scaler = decision.state
    moves = _moves(observed, decision)
    await _rank_for_scale_down(rt, namespace, pods, heartbeats, moves)

    applied = False
    if len(models) == len(spec.models):
        ctx = builders.PoolContext(
            namespace=namespace, name=name, uid=meta["uid"], spec=spec, models=models,
            pool_labels=dict(meta.get("labels") or {}), defaults=rt.config.defaults,
            warm_replicas=decision.warm, cold_replicas=decision.cold)
        try:
            for child in builders.pool_children(ctx):
                await rt.kube.apply(child)
            applied = True
        except builders.BuildError as err:
            problems.append(str(err))
        except KubeError as err:
            problems.append(f"applying children: {err}")

    scaled = applied and bool(moves)
    if scaled:
        for role, before, after in moves:
            direction = "up" if after > before else "down"
            rt.metrics.scale_events.labels(namespace, name, role, direction).inc()
        changes = ", ".join(f"{role} {before}→{after}" for role, before, after in moves)
        result.events.append(PassEvent("Normal", "Scaled", f"{changes}: {decision.reason}"))
    if lag_error and not mem.lag_failing:
        result.events.append(PassEvent("Warning", "QueueMetricsUnavailable",
                                       f"holding replicas: {lag_error}"))
    elif not lag_error and mem.lag_failing:
        result.events.append(PassEvent("Normal", "QueueMetricsRestored",
                                       "consumer lag readable again; autoscaling resumed"))
    mem.lag_failing = lag_error is not None

    obs = PoolObservation(
        generation=generation,
        warm=RoleObservation(desired=decision.warm, replicas=warm_obs.replicas,
                             ready=warm_obs.ready, pending=warm_obs.pending),
        cold=RoleObservation(desired=decision.cold, replicas=cold_obs.replicas,
                             ready=cold_obs.ready, pending=cold_obs.pending),
        queue=QueueObservation(
            lag_by_tier={t.tier: t.lag for t in lag.tiers} if lag else {},
            partitions=lag.partitions_total if lag else 0, error=lag_error),
        heartbeats=heartbeats,
        problems=problems,
        scaled=scaled,
        scale_reason=decision.reason,
        scaling_held=decision.held,
        stalled=stalled,
    )
    new_status = pool_status(spec, obs, old_status, datetime.now(UTC))
    await rt.kube.patch_status(naming.API_VERSION, naming.GENERATIONPOOL_KIND, namespace, name,
                               new_status.to_wire())
    _export_metrics(rt, namespace, name, new_status)
    mem.last_poll = now
    mem.last_generation = generation
    rt.metrics.reconcile_seconds.labels("GenerationPool").observe(time.monotonic() - started)
    return result


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


async def _rank_for_scale_down(rt: Runtime, namespace: str, pods: list[dict[str, Any]],
                               heartbeats: list[Heartbeat],
                               moves: list[tuple[str, int, int]]) -> None:
    """Before a role shrinks, mark which of its pods the ReplicaSet should remove first."""
    shrinking = {role for role, before, after in moves if after < before}
    if not shrinking:
        return
    busy = {hb.worker: hb.in_flight for hb in heartbeats}
    candidates = [
        WorkerPod(p["metadata"]["name"], _pod_ready(p),
                  (p["metadata"].get("annotations") or {}).get(DELETION_COST))
        for p in pods
        if (p["metadata"].get("labels") or {}).get(naming.LABEL_ROLE) in shrinking
        and not p["metadata"].get("deletionTimestamp")]
    for pod_name, cost in deletion_costs(candidates, busy).items():
        try:
            await rt.kube.annotate("v1", "Pod", namespace, pod_name, {DELETION_COST: str(cost)})
        except KubeError as err:  # ranking is an optimisation; the drain still protects work
            log.warning("could not rank %s/%s for scale-down: %s", namespace, pod_name, err)


def _export_metrics(rt: Runtime, namespace: str, name: str, st: GenerationPoolStatus) -> None:
    m = rt.metrics
    for tier, lag in st.queue.lag_by_tier.items():
        m.pool_lag.labels(namespace, name, tier).set(lag)
    m.pool_desired.labels(namespace, name, "warm").set(st.warm.desired)
    m.pool_desired.labels(namespace, name, "cold").set(st.cold.desired)
    m.pool_ready.labels(namespace, name, "warm").set(st.warm.ready)
    m.pool_ready.labels(namespace, name, "cold").set(st.cold.ready)
    m.pool_throughput.labels(namespace, name).set(st.throughput)
