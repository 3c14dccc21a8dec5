"""The plan step of a GenerationPool pass: what was observed + what the operator remembers →
children to apply, pods to rank for scale-down, Events, the status, and the new memory. Pure.

A pass is observe (pool_observe.py: reads the API indexes, Kafka, Redis) → plan (here) → apply
(pool_apply.py: writes). Everything the plan needs arrives as plain data in `PoolState`, so every
rule here is unit-tested without a cluster (tests/unit/operator/test_pool_plan.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from imagegen_api import naming
from imagegen_api.base import first_error
from imagegen_api.messages import Heartbeat
from imagegen_api.specs import (
    GatewayStatus,
    GenerationPoolSpec,
    GenerationPoolStatus,
    ImageModelSpec,
)
from pydantic import ValidationError

from . import builders, cache_claims, serving
from .builders import gateway
from .builders.context import OperatorDefaults
from .builders.workload import worker_image
from .problems import Problem, Reason
from .scaling.backlog_age import EndHistory, oldest_ages, record_ends
from .scaling.drain_order import WorkerPod, deletion_costs
from .scaling.lag import LagSnapshot, Stall, TopicPartition, stalled_for, track_stalls
from .scaling.policy import Decision, Observed, ScalerState, decide
from .status import (
    PoolObservation,
    QueueObservation,
    RoleObservation,
    invalid_spec_conditions,
    pool_status,
    status_differs,
)

Manifest = dict[str, Any]
# (apiVersion, kind, name) of a child in the pool's namespace.
ChildRef = tuple[str, str, str]
# (bootstrap, topic names, partitions) the topics were last ensured for.
TopicsKey = tuple[str, tuple[str, ...], int]
# Key of the gateway's Deployment in PoolState.deployments (the others are keyed by role).
GATEWAY = "gateway"
# Unchanged children are applied again at least this often (seconds): a manual edit of a field
# the operator renders is reverted within it. A change of what is rendered, a Deployment whose
# replicas differ from the decision, or a missing one is applied at once.
RESYNC_SECONDS = 30.0


@dataclass(frozen=True)
class PlanSettings:
    """The operator settings a plan reads (from config.OperatorConfig)."""

    defaults: OperatorDefaults = field(default_factory=OperatorDefaults)
    # A backlog not moving this long while workers are ready is reported (PartitionStalled).
    stall_seconds: float = 120.0
    # Worker image prefixes pools may run; empty: any.
    allowed_images: tuple[str, ...] = ()


@dataclass(frozen=True)
class PoolMemory:
    """What the operator remembers about one pool between passes; one value, replaced by each
    pass's plan (lost on restart: the Deployments' replicas are re-read, so a restart never
    resets the pool)."""

    scaler: ScalerState = field(default_factory=ScalerState)
    topics_ensured: TopicsKey | None = None
    last_poll: float = 0.0
    last_generation: int | None = None
    # Failures already announced by an Event: a Warning on the first failure, not every poll.
    lag_failing: bool = False
    kafka_failing: bool = False
    # Partitions with a backlog: (committed offset, since when it has not moved).
    stalls: Mapping[TopicPartition, tuple[int | None, float]] = field(default_factory=dict)
    stalled_reported: tuple[str, ...] = ()
    # When each partition's end offset was seen to move: the age of the oldest pending request.
    end_history: EndHistory = field(default_factory=dict)
    # Heartbeat counters of the last hour, per worker: images served and cache hit rate.
    served: serving.Samples = field(default_factory=dict)
    # Digest of the children last applied successfully, and when.
    applied_digest: str | None = None
    applied_at: float = 0.0


@dataclass(frozen=True)
class PassEvent:
    """An Event the handler posts on the pool (Kopf owns the event API)."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class DeploymentView:
    """A worker Deployment as the index holds it."""

    desired: int = 0
    replicas: int = 0
    ready: int = 0
    # The operator's own apply manages spec.replicas (managedFields): an autoscaler taking the
    # count over needs the hand-over first (builders.gateway.replicas_handover).
    replicas_applied: bool = False


@dataclass(frozen=True)
class PodView:
    """A worker pod as the index holds it."""

    name: str
    role: str | None
    phase: str | None
    ready: bool
    deletion_cost: str | None = None
    deleting: bool = False


@dataclass(frozen=True)
class KafkaView:
    """The queue as observed: topics ensured (when due) and the group's lag."""

    # How messages name the bootstrap (a reference, never a value read from a Secret).
    label: str = ""
    configured: bool = True
    topics_key: TopicsKey | None = None
    # Actions of an ensure made this pass; None when none was due (already ensured) or it failed.
    topics_actions: tuple[str, ...] | None = None
    topics_error: str | None = None
    lag: LagSnapshot | None = None
    lag_error: str | None = None


@dataclass(frozen=True)
class PoolState:
    """Everything observed about one pool in one pass."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    now: float  # wall clock, seconds
    models: Mapping[str, ImageModelSpec] = field(default_factory=dict)
    # Found while observing: missing or invalid models, unreadable references.
    problems: tuple[Problem, ...] = ()
    kafka: KafkaView = field(default_factory=KafkaView)
    heartbeats: tuple[Heartbeat, ...] = ()
    deployments: Mapping[str, DeploymentView | None] = field(default_factory=dict)
    pods: tuple[PodView, ...] = ()
    # The model-cache claims the pool's models use → their access modes (claims that exist).
    claim_modes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The gateway's HorizontalPodAutoscaler exists.
    gateway_hpa: bool = False


@dataclass(frozen=True)
class _Report:
    """What the events and status are computed from, kept so a failed apply can re-report."""

    state: PoolState
    spec: GenerationPoolSpec
    old_status: GenerationPoolStatus | None
    decision: Decision
    ages: Mapping[str, float]
    served: serving.Served
    warm: RoleObservation
    cold: RoleObservation
    problems: tuple[Problem, ...]
    stalls: tuple[Stall, ...]
    events_before: tuple[PassEvent, ...]
    lag_failing: bool
    memory_before: PoolMemory


@dataclass(frozen=True)
class PoolPlan:
    # What to apply this pass: empty when the pool cannot be rendered, or when nothing changed
    # since the last apply (less than RESYNC_SECONDS ago).
    children: tuple[Manifest, ...]
    # Pod name → pod-deletion-cost to set before a role shrinks.
    deletion_costs: Mapping[str, int]
    events: tuple[PassEvent, ...]
    # Merge patch of the status subresource, and whether it changes anything.
    status: Mapping[str, Any]
    status_changed: bool
    problems: tuple[Problem, ...]
    # (role, before, after) applied when the children are: for metrics.
    scaled: tuple[tuple[str, int, int], ...]
    memory: PoolMemory
    # Each tier's maxWaitSeconds, exported next to its oldest pending age (alerts compare them).
    tier_max_wait: Mapping[str, int] = field(default_factory=dict)
    # warm/cold maxReplicas, exported next to the desired replicas (the at-max alert).
    role_max: Mapping[str, int] = field(default_factory=dict)
    # Applied under builders.gateway's hand-over field manager before `children`.
    handovers: tuple[Manifest, ...] = ()
    # Children the spec no longer asks for (the gateway's HPA, a disabled gateway): deleted.
    deletions: tuple[ChildRef, ...] = ()
    _report: _Report | None = None

    def apply_failed(self, problem: Problem) -> PoolPlan:
        """The same pass when applying the children failed: no Scaled event, the problem in the
        status."""
        if self._report is None:
            return replace(self, problems=(*self.problems, problem))
        report = replace(self._report, problems=(*self._report.problems, problem))
        events, status = _events_and_status(report, applied=False)
        before = self._report.memory_before
        memory = replace(self.memory, applied_digest=before.applied_digest,
                         applied_at=before.applied_at)
        return replace(self, events=events, status=status,
                       status_changed=status_differs(status, self._report.state.status),
                       problems=report.problems, scaled=(), memory=memory, _report=report)


def plan(state: PoolState, memory: PoolMemory, config: PlanSettings) -> PoolPlan:
    old_status = _old_status(state.status)
    try:
        spec = GenerationPoolSpec.model_validate(state.spec)
    except ValidationError as err:
        return _invalid_spec(state, memory, old_status, err)

    problems = list(state.problems)
    for claim, modes in sorted(state.claim_modes.items()):
        if (problem := cache_claims.placement_problem(claim, modes, spec)) is not None:
            problems.append(problem)
    events: list[PassEvent] = []
    k = state.kafka
    topics_ensured, kafka_failing = _kafka(k, memory, problems, events)

    pending = {role: sum(1 for p in state.pods if p.role == role and p.phase == "Pending")
               for role in naming.ROLES}
    dep_warm = state.deployments.get(naming.ROLE_WARM)
    dep_cold = state.deployments.get(naming.ROLE_COLD)
    warm = _role(dep_warm, pending[naming.ROLE_WARM])
    cold = _role(dep_cold, pending[naming.ROLE_COLD])

    stall_memory, stalls = _stalls(state, spec, memory, warm.ready + cold.ready,
                                   config.stall_seconds)
    where = tuple(s.where for s in stalls)
    if stalls and where != memory.stalled_reported:
        events.append(PassEvent(
            "Warning", "PartitionStalled",
            "committed offsets not moving while workers are ready (hung worker or a batch "
            "far slower than expected): " + ", ".join(str(s) for s in stalls)))

    observed = Observed(
        warm_replicas=dep_warm.desired if dep_warm is not None else None,
        warm_ready=warm.ready,
        cold_replicas=cold.desired,
        cold_ready=cold.ready,
        throughput_per_worker=per_worker_rate(state.heartbeats),
    )
    end_history, ages = _backlog_ages(spec, k.lag, memory.end_history, state.now)
    served_samples = serving.record(memory.served, state.heartbeats, state.now)
    decision = decide(spec, k.lag, observed, memory.scaler, state.now, k.lag_error, ages)

    children, handovers = _children(state, spec, decision, config, problems)

    report = _Report(state=state, spec=spec, old_status=old_status, decision=decision,
                     ages=ages, served=serving.served(served_samples, state.now),
                     warm=warm, cold=cold, problems=tuple(problems),
                     stalls=tuple(stalls),
                     events_before=tuple(events), lag_failing=memory.lag_failing,
                     memory_before=memory)
    applied = bool(children)
    digest, applied_at = memory.applied_digest, memory.applied_at
    if applied:
        digest = _digest(children)
        if not handovers and _up_to_date(digest, state, memory, decision):
            children = ()  # nothing to write; `applied` stays: the children are as decided
        else:
            applied_at = state.now
    out_events, status = _events_and_status(report, applied=applied)
    return PoolPlan(
        children=children,
        deletion_costs=scale_down_ranking(state, decision) if applied else {},
        events=out_events,
        status=status,
        status_changed=status_differs(status, state.status),
        problems=tuple(problems),
        scaled=decision.moves if applied else (),
        memory=PoolMemory(
            scaler=decision.state, topics_ensured=topics_ensured, last_poll=state.now,
            last_generation=state.generation, lag_failing=k.lag_error is not None,
            kafka_failing=kafka_failing, stalls=stall_memory, stalled_reported=where,
            end_history=end_history, served=served_samples, applied_digest=digest,
            applied_at=applied_at),
        tier_max_wait={t.name: t.max_wait_seconds for t in spec.queue.tiers},
        role_max={naming.ROLE_WARM: spec.warm.max_replicas,
                  naming.ROLE_COLD: spec.cold.max_replicas},
        handovers=handovers,
        deletions=stale_gateway_children(state, spec),
        _report=report,
    )


def stale_gateway_children(state: PoolState, spec: GenerationPoolSpec) -> tuple[ChildRef, ...]:
    """What of the gateway exists but is no longer asked for: its HPA once autoscaling is off
    (the operator sets replicas again), everything once the gateway is disabled."""
    gw = spec.gateway
    name = naming.gateway_name(state.name)
    out: list[ChildRef] = []
    if state.gateway_hpa and (not gw.enabled or gw.autoscaling is None):
        out.append(("autoscaling/v2", "HorizontalPodAutoscaler", name))
    if not gw.enabled and state.deployments.get(GATEWAY) is not None:
        out += [("apps/v1", "Deployment", name), ("v1", "Service", name),
                ("policy/v1", "PodDisruptionBudget", name)]
    return tuple(out)


def _digest(children: tuple[Manifest, ...]) -> str:
    text = json.dumps(children, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _up_to_date(digest: str, state: PoolState, memory: PoolMemory, decision: Decision) -> bool:
    """The children rendered now were applied recently, and the Deployments (as the index holds
    them) ask for the decided replicas: no write needed this pass."""
    if digest != memory.applied_digest or state.now - memory.applied_at >= RESYNC_SECONDS:
        return False
    for role, want in ((naming.ROLE_WARM, decision.warm), (naming.ROLE_COLD, decision.cold)):
        dep = state.deployments.get(role)
        if dep is None or dep.desired != want:
            return False
    return True


def _kafka(k: KafkaView, memory: PoolMemory, problems: list[Problem],
           events: list[PassEvent]) -> tuple[TopicsKey | None, bool]:
    """Kafka problems and topic events; returns (topics ensured for, Kafka failing). An ensure
    was made this pass when the view carries its actions or its error."""
    if not k.configured and not any(p.reason == Reason.SECRET_MISSING for p in problems):
        problems.append(Problem(Reason.KAFKA_NOT_CONFIGURED,
                                "no Kafka bootstrap: set spec.queue.bootstrapServers or the "
                                f"operator's {naming.ENV_KAFKA_BOOTSTRAP}"))
    if k.topics_error is not None:
        problems.append(Problem(Reason.KAFKA_UNREACHABLE, k.topics_error))
        if not memory.kafka_failing:
            events.append(PassEvent("Warning", "KafkaUnavailable", k.topics_error))
        return memory.topics_ensured, True
    if k.topics_actions is not None:
        events.extend(PassEvent("Normal", "TopicsReady", a) for a in k.topics_actions)
        return k.topics_key, False
    return memory.topics_ensured, memory.kafka_failing


def _children(state: PoolState, spec: GenerationPoolSpec, decision: Decision,
              config: PlanSettings, problems: list[Problem]
              ) -> tuple[tuple[Manifest, ...], tuple[Manifest, ...]]:
    """The children at the decided replicas, and the gateway's replicas hand-over when its
    autoscaler takes the count over; none while a model is missing, the image is not allowed,
    or the pool cannot be rendered (each a problem)."""
    if len(state.models) != len(spec.models):
        return (), ()
    gateway_dep = state.deployments.get(GATEWAY)
    ctx = builders.PoolContext(
        namespace=state.namespace, name=state.name, uid=state.uid, spec=spec,
        models=dict(state.models), warm_replicas=decision.warm, cold_replicas=decision.cold,
        pool_labels=dict(state.labels), defaults=config.defaults,
        gateway_exists=gateway_dep is not None)
    image = worker_image(ctx)
    if not image_allowed(image, config.allowed_images):
        problems.append(Problem(
            Reason.IMAGE_NOT_ALLOWED,
            f"spec.worker.image {image!r} is not allowed by the operator "
            f"(IMAGEGEN_ALLOWED_IMAGES: {', '.join(config.allowed_images)}); "
            "no workers are started"))
        return (), ()
    try:
        children = tuple(builders.pool_children(ctx))
    except builders.BuildError as err:
        problems.append(Problem(Reason.INVALID_CHILDREN, str(err)))
        return (), ()
    handovers: tuple[Manifest, ...] = ()
    if (spec.gateway.enabled and spec.gateway.autoscaling is not None
            and gateway_dep is not None and gateway_dep.replicas_applied):
        handovers = (gateway.replicas_handover(ctx, gateway_dep.desired),)
    return children, handovers


def _events_and_status(r: _Report, *, applied: bool) -> tuple[tuple[PassEvent, ...],
                                                              dict[str, Any]]:
    """Events after the topics and stalls ones (Scaled, queue metrics), and the status."""
    events = list(r.events_before)
    d, lag_error = r.decision, r.state.kafka.lag_error
    scaled = applied and bool(d.moves)
    if scaled:
        changes = ", ".join(f"{role} {before}→{after}" for role, before, after in d.moves)
        events.append(PassEvent("Normal", "Scaled", f"{changes}: {d.reason}"))
    if lag_error and not r.lag_failing:
        events.append(PassEvent("Warning", "QueueMetricsUnavailable",
                                f"holding replicas: {lag_error}"))
    elif not lag_error and r.lag_failing:
        events.append(PassEvent("Normal", "QueueMetricsRestored",
                                "consumer lag readable again; autoscaling resumed"))
    lag = r.state.kafka.lag
    obs = PoolObservation(
        generation=r.state.generation,
        warm=replace(r.warm, desired=d.warm),
        cold=replace(r.cold, desired=d.cold),
        queue=QueueObservation(
            lag_by_tier={t.tier: t.lag for t in lag.tiers} if lag else {},
            oldest_by_tier=dict(r.ages),
            partitions=lag.partitions_total if lag else 0, error=lag_error),
        heartbeats=r.state.heartbeats,
        problems=r.problems,
        scaled=scaled,
        scale_reason=d.reason,
        scaling_held=d.held,
        stalled=[str(s) for s in r.stalls],
        served=r.served,
        gateway=gateway_status(r.state, r.spec),
    )
    status = pool_status(r.spec, obs, r.old_status, _wall(r.state.now))
    return tuple(events), status.to_wire()


def gateway_status(state: PoolState, spec: GenerationPoolSpec) -> GatewayStatus | None:
    """status.gateway: the Service's URL and the gateway Deployment's pods, when enabled."""
    if not spec.gateway.enabled:
        return None
    dep = state.deployments.get(GATEWAY)
    return GatewayStatus(url=naming.gateway_url(state.namespace, state.name),
                         replicas=dep.replicas if dep else 0, ready=dep.ready if dep else 0)


def _invalid_spec(state: PoolState, memory: PoolMemory, old: GenerationPoolStatus | None,
                  err: ValidationError) -> PoolPlan:
    # The CRD schema refuses most of this at apply time; this catches what slips through.
    problem = Problem(Reason.INVALID_SPEC, first_error(err))
    conditions = invalid_spec_conditions(problem.message, state.generation,
                                         old.conditions if old else [], _wall(state.now))
    status = {"observedGeneration": state.generation,
              "conditions": [c.to_wire() for c in conditions]}
    return PoolPlan(children=(), deletion_costs={}, events=(), status=status,
                    status_changed=status_differs(status, state.status), problems=(problem,),
                    scaled=(), memory=memory)


def _old_status(raw: Mapping[str, Any]) -> GenerationPoolStatus | None:
    try:
        return GenerationPoolStatus.model_validate(raw or {})
    except ValidationError:
        return None


def _wall(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def _role(dep: DeploymentView | None, pending: int) -> RoleObservation:
    if dep is None:
        return RoleObservation()
    return RoleObservation(desired=dep.desired, replicas=dep.replicas, ready=dep.ready,
                           pending=pending)


def _stalls(state: PoolState, spec: GenerationPoolSpec, memory: PoolMemory, ready: int,
            threshold: float) -> tuple[Mapping[TopicPartition, tuple[int | None, float]],
                                       list[Stall]]:
    """A backlog that does not move while workers are ready. Not while none is ready: then the
    pool is waiting for workers, which the Ready condition already tells."""
    lag = state.kafka.lag
    if lag is None:
        return memory.stalls, []
    if ready == 0:
        return {}, []
    since = track_stalls(memory.stalls, lag, state.now)
    # A tier may wait up to its maxWaitSeconds by design (weights + starvation guard).
    waits = {naming.tier_topic(state.namespace, state.name, t.name): 1.5 * t.max_wait_seconds
             for t in spec.queue.tiers}
    return since, stalled_for(since, lag, state.now, threshold, waits)


def _backlog_ages(spec: GenerationPoolSpec, lag: LagSnapshot | None, history: EndHistory,
                  now: float) -> tuple[EndHistory, dict[str, float]]:
    """The end-offset history with this pass, and the oldest pending age of each tier (empty
    without a lag reading: the history is kept as it was)."""
    if lag is None:
        return history, {}
    # Long enough to see a patient tier reach its max wait, and a little past it.
    keep = max(600.0, 2.0 * max(t.max_wait_seconds for t in spec.queue.tiers))
    history = record_ends(history, lag, now, keep)
    return history, oldest_ages(history, lag, now)


def per_worker_rate(heartbeats: tuple[Heartbeat, ...]) -> float | None:
    """Images per second of one busy worker, from workers that are generating; None if none."""
    rates = [hb.images_per_second for hb in heartbeats if hb.images_per_second > 0]
    return sum(rates) / len(rates) if rates else None


def scale_down_ranking(state: PoolState, decision: Decision) -> dict[str, int]:
    """Before a role shrinks, which of its pods the ReplicaSet should remove first."""
    shrinking = {role for role, before, after in decision.moves if after < before}
    if not shrinking:
        return {}
    busy = {hb.worker: hb.in_flight for hb in state.heartbeats}
    candidates = [WorkerPod(p.name, p.ready, p.deletion_cost) for p in state.pods
                  if p.role in shrinking and not p.deleting]
    return deletion_costs(candidates, busy)


def image_allowed(image: str, prefixes: tuple[str, ...]) -> bool:
    """No prefixes: every image. Otherwise the image must start with one, at a boundary
    (`registry.example.com` admits `registry.example.com/x:1`, not `registry.example.com.evil/x`).
    """
    if not prefixes:
        return True
    for prefix in prefixes:
        if image == prefix:
            return True
        if image.startswith(prefix) and (prefix.endswith(("/", ":", "@"))
                                         or image[len(prefix)] in "/:@"):
            return True
    return False
