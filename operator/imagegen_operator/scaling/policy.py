"""The scaling decision: queue lag in, warm and cold replica counts out. Pure and deterministic
(time is an argument), so every rule is unit-tested without a cluster or Kafka.

Order of the rules:

1. desired workers from the lag: ``ceil(lag / targetLagPerWorker)`` (target mode), or in SLO mode
   (``targetWaitSeconds`` set and a measured per-worker throughput) enough workers to drain the
   backlog within that time: ``ceil(lag / (throughput_per_worker * targetWaitSeconds))``;
2. capped at the partition count of the busiest tier (idle consumers help nobody), or lower at
   the number of partitions that hold a backlog when keys are skewed (one consumer per
   partition), unless ``allowIdleConsumers``;
3. stabilized like the HPA: scale up to the lowest recommendation of the up window, scale down to
   the highest recommendation of the down window;
4. split warm first (never below ``warm.minReplicas``, at most ``warm.maxReplicas``), the overflow
   to cold (at most ``cold.maxReplicas``); cold wakes from zero only above ``cold.activationLag``
   and, once awake, stays until the stabilized overflow is zero;
5. tier-aware cold: each tier's backlog is weighed by its promise (``Tier.cold_wake``). Warm is
   sized from the whole backlog; cold only for the workers that the backlog of tiers allowed to
   wake it asks for (rules 1-3 again on that part, with its own stabilized recommendation), above
   what warm gives. A patient tier (relax: NearMaxWait) joins that part once its oldest request
   has waited ``NEAR_MAX_WAIT_FRACTION`` of its maxWaitSeconds; a Never tier never does. With
   every tier Always (or no patient backlog) this is rule 4 unchanged.

The baseline is the replica count the Deployments ask for, not the ready count: a pod that waits
for a GPU node (Pending) is capacity on its way, not a failure, and must not trigger more scaling.
Before the warm Deployment exists the baseline is ``warm.minReplicas``. Missing metrics (Kafka
down, group or topics missing) hold the current replicas: a metric outage never scales a pool to
zero.

This is the only place that decides replica counts: the builders render what it returns as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from imagegen_api import naming
from imagegen_api.specs import NEAR_MAX_WAIT_FRACTION, GenerationPoolSpec

from .lag import LagSnapshot


@dataclass(frozen=True)
class Observed:
    # None: the warm Deployment does not exist yet (its baseline is then warm.minReplicas).
    warm_replicas: int | None
    warm_ready: int
    cold_replicas: int
    cold_ready: int
    # Images/s per busy worker from heartbeats; None when unknown (no fresh heartbeat yet).
    throughput_per_worker: float | None = None

    @property
    def replicas(self) -> int:
        return (self.warm_replicas or 0) + self.cold_replicas


@dataclass(frozen=True)
class Recommendation:
    at: float
    workers: int
    # Workers asked for by the backlog that may wake the cold pool; None: the same as workers.
    cold_workers: int | None = None

    @property
    def cold(self) -> int:
        return self.workers if self.cold_workers is None else self.cold_workers


@dataclass(frozen=True)
class ScalerState:
    history: tuple[Recommendation, ...] = ()
    last_scale_at: float | None = None
    cold_active: bool = False
    # The last pass held on missing metrics: holds record no recommendation, so after an outage
    # the window may be empty although the pool was never re-evaluated.
    held: bool = False


@dataclass(frozen=True)
class Decision:
    warm: int
    cold: int
    desired_total: int
    raw_total: int  # from the lag alone, before the partition cap and stabilization
    reason: str
    capped: bool
    held: bool  # metrics missing: replicas held as they are
    state: ScalerState
    changed: bool
    # (role, replicas before, after) of each role this decision changes.
    moves: tuple[tuple[str, int, int], ...] = ()

    @property
    def total(self) -> int:
        return self.warm + self.cold


def _moves(observed: Observed, warm: int, cold: int) -> tuple[tuple[str, int, int], ...]:
    return tuple((role, before, after) for role, before, after in (
        (naming.ROLE_WARM, observed.warm_replicas or 0, warm),
        (naming.ROLE_COLD, observed.cold_replicas, cold)) if before != after)


def decide(
    spec: GenerationPoolSpec,
    lag: LagSnapshot | None,
    observed: Observed,
    state: ScalerState,
    now: float,
    lag_error: str | None = None,
    ages: Mapping[str, float] | None = None,
) -> Decision:
    """`ages`: seconds the oldest pending request of each tier has waited (scaling/backlog_age);
    absent tiers count as 0 (a patient tier then waits for warm workers)."""
    if observed.warm_replicas is None:
        observed = replace(observed, warm_replicas=spec.warm.min_replicas)
    if lag is None:
        return _hold(spec, observed, state, now, lag_error)
    auto = spec.autoscaling

    raw, how = _raw_workers(spec, lag.total, observed.throughput_per_worker)
    notes = [f"lag {lag.describe()} / {how} = {raw} workers"]

    cold_lag, waiting = _cold_lag(spec, lag, ages or {})
    raw_cold = raw if cold_lag == lag.total else _raw_workers(
        spec, cold_lag, observed.throughput_per_worker)[0]

    rec = raw
    cap = lag.busiest_tier_partitions
    lagging = lag.lagging_partitions
    skewed = 0 < lagging < cap
    if skewed:
        cap = lagging
    capped = not auto.allow_idle_consumers and cap > 0 and raw > cap
    rec_cold = min(raw_cold, cap) if not auto.allow_idle_consumers and cap > 0 else raw_cold
    if capped:
        rec = cap
        if skewed:
            notes.append(f"capped at {cap} partitions (only {lagging} partitions hold the "
                         "backlog: skewed keys; allowIdleConsumers is off)")
        else:
            notes.append(f"capped at {cap} partitions (busiest tier; allowIdleConsumers is off)")

    # Fresh operator, or the first read after a lag outage whose down window now holds no
    # recommendation (holds record none): the current replicas count as a recommendation made
    # now, so neither a restart nor an outage longer than the window scales down at once.
    longest = max(auto.scale_up_stabilization_seconds, auto.scale_down_stabilization_seconds)
    history = tuple(r for r in state.history if now - r.at <= longest)
    down_window = auto.scale_down_stabilization_seconds
    if not state.history or (
            state.held and not any(now - r.at < down_window for r in history)):
        history = (*history, Recommendation(now, observed.replicas))
    history = (*history, Recommendation(now, rec, None if rec_cold == rec else rec_cold))

    stable = _stabilize(
        rec,
        observed.replicas,
        history,
        now,
        auto.scale_up_stabilization_seconds,
        auto.scale_down_stabilization_seconds,
    )
    floor = spec.warm.min_replicas
    # Mention a window only when it changes the outcome (not when warm.minReplicas does anyway).
    if stable > rec and stable > floor:
        notes.append(
            f"scale-down held at {stable} "
            f"(highest in the last {auto.scale_down_stabilization_seconds}s)"
        )
    elif stable < rec and rec > floor:
        notes.append(
            f"scale-up limited to {stable} "
            f"(lowest in the last {auto.scale_up_stabilization_seconds}s)"
        )

    warm_spec, cold_spec = spec.warm, spec.cold
    warm = min(max(stable, warm_spec.min_replicas), warm_spec.max_replicas)
    overflow = max(0, stable - warm)
    if waiting and overflow > 0:
        # The same windows on the part that may wake cold: no flapping as a patient tier
        # crosses its threshold, no sudden drop when the urgent backlog drains.
        stable_cold = _stabilize(
            rec_cold, observed.replicas, history, now, auto.scale_up_stabilization_seconds,
            auto.scale_down_stabilization_seconds, cold=True)
        allowed = min(overflow, max(0, stable_cold - warm))
        if allowed < overflow:
            notes.append(f"cold for {cold_lag} of the backlog only ({allowed} of {overflow} "
                         f"overflow workers): " + ", ".join(waiting))
        overflow = allowed
    # Pods already running on cold nodes mean cold is awake, even if this state was lost.
    cold_active = state.cold_active or observed.cold_replicas > 0
    cold = 0
    if overflow > 0 and cold_spec.max_replicas > 0:
        if cold_active or cold_lag > cold_spec.activation_lag:
            cold = min(overflow, cold_spec.max_replicas)
            if overflow > cold:
                notes.append(f"{overflow - cold} workers over cold.maxReplicas")
        else:
            notes.append(
                f"cold asleep: lag {cold_lag} <= activationLag {cold_spec.activation_lag}"
            )
    elif overflow > 0:
        notes.append(f"{overflow} workers over warm.maxReplicas and no cold pool")

    warm_note = (
        " (max)"
        if warm == warm_spec.max_replicas and stable >= warm
        else " (min)"
        if warm == warm_spec.min_replicas and stable <= warm
        else ""
    )
    cold_note = " (max)" if cold and cold == cold_spec.max_replicas else ""
    changed = (warm, cold) != (observed.warm_replicas, observed.cold_replicas)
    new_state = ScalerState(
        history=history,
        last_scale_at=now if changed else state.last_scale_at,
        cold_active=cold > 0,
    )
    reason = "; ".join(notes) + f" → warm {warm}{warm_note}, cold {cold}{cold_note}"
    return Decision(
        warm=warm,
        cold=cold,
        desired_total=warm + cold,
        raw_total=raw,
        reason=reason,
        capped=capped,
        held=False,
        state=new_state,
        changed=changed,
        moves=_moves(observed, warm, cold),
    )


def _cold_lag(spec: GenerationPoolSpec, lag: LagSnapshot,
              ages: Mapping[str, float]) -> tuple[int, list[str]]:
    """The backlog allowed to wake the cold pool, and why the rest is not (for the reason).
    A tier the spec does not list (topics of a removed tier cannot exist: CEL) counts."""
    tiers = {t.name: t for t in spec.queue.tiers}
    allowed = 0
    waiting: list[str] = []
    for t in lag.tiers:
        tier = tiers.get(t.tier)
        if t.lag <= 0:
            continue
        mode = tier.cold_wake if tier is not None else "Always"
        if tier is None or mode == "Always":
            allowed += t.lag
            continue
        age = ages.get(t.tier, 0.0)
        due = NEAR_MAX_WAIT_FRACTION * tier.max_wait_seconds
        if mode == "NearMaxWait" and age >= due:
            allowed += t.lag
        elif mode == "NearMaxWait":
            waiting.append(f"{t.tier} {t.lag} waits for warm (oldest {age:.0f}s < {due:.0f}s, "
                           f"half its {tier.max_wait_seconds}s max wait)")
        else:
            waiting.append(f"{t.tier} {t.lag} waits for warm (wakeCold Never)")
    return allowed, waiting


def _raw_workers(spec: GenerationPoolSpec, lag: int, per_worker: float | None) -> tuple[int, str]:
    """Workers the lag asks for, and how that was computed (for the reason)."""
    auto = spec.autoscaling
    target = f"target {auto.target_lag_per_worker} per worker"
    if auto.target_wait_seconds is not None:
        if per_worker is not None and per_worker > 0:
            drain = per_worker * auto.target_wait_seconds
            # The epsilon keeps float noise (0.1 * 30 = 3.0000000000000004) from adding a worker.
            return (
                math.ceil(lag / drain - 1e-9),
                f"({per_worker:.3g} img/s per worker x {auto.target_wait_seconds}s wait"
                f" = {drain:.3g} per worker)",
            )
        return (
            math.ceil(lag / auto.target_lag_per_worker),
            f"{target} (SLO mode: throughput unknown yet)",
        )
    return math.ceil(lag / auto.target_lag_per_worker), target


def _stabilize(
    rec: int,
    current: int,
    history: tuple[Recommendation, ...],
    now: float,
    up_window: int,
    down_window: int,
    cold: bool = False,
) -> int:
    """The HPA rule: up to the lowest recommendation of the up window, down to the highest of
    the down window; a window of 0 follows the current recommendation at once. `cold`: over
    the recommendations for the backlog that may wake the cold pool."""
    def of(r: Recommendation) -> int:
        return r.cold if cold else r.workers

    up = min((of(r) for r in history if now - r.at < up_window), default=rec)
    down = max((of(r) for r in history if now - r.at < down_window), default=rec)
    up, down = min(up, rec), max(down, rec)
    stable = current
    if stable < up:
        stable = up
    if stable > down:
        stable = down
    return stable


def _hold(
    spec: GenerationPoolSpec,
    observed: Observed,
    state: ScalerState,
    now: float,
    lag_error: str | None,
) -> Decision:
    # Spec bounds still apply (an edited min/max is honoured); the lag-driven part waits.
    warm = min(max(observed.warm_replicas or 0, spec.warm.min_replicas), spec.warm.max_replicas)
    cold = min(observed.cold_replicas, spec.cold.max_replicas)
    why = lag_error or "queue metrics unavailable"
    changed = (warm, cold) != (observed.warm_replicas, observed.cold_replicas)
    return Decision(
        warm=warm,
        cold=cold,
        desired_total=warm + cold,
        raw_total=observed.replicas,
        reason=f"holding warm {warm}, cold {cold}: no queue metrics ({why})",
        capped=False,
        held=True,
        state=replace(state, held=True, last_scale_at=now if changed else state.last_scale_at),
        changed=changed,
        moves=_moves(observed, warm, cold),
    )
