"""The scaling decision, rule by rule and over time (time is an argument: no sleeping)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from imagegen_api.specs import GenerationPoolSpec
from imagegen_operator.scaling.lag import LagSnapshot, TierLag
from imagegen_operator.scaling.policy import (
    Decision,
    Observed,
    Recommendation,
    ScalerState,
    decide,
)


def spec(
    warm: dict[str, Any] | None = None,
    cold: dict[str, Any] | None = None,
    autoscaling: dict[str, Any] | None = None,
) -> GenerationPoolSpec:
    return GenerationPoolSpec.model_validate(
        {
            "models": ["sdxl"],
            "warm": {"minReplicas": 1, "maxReplicas": 4, **(warm or {})},
            "cold": {"maxReplicas": 8, "activationLag": 5, **(cold or {})},
            # Windows off unless a test is about them: one rule at a time.
            "autoscaling": {
                "targetLagPerWorker": 2,
                "scaleDownStabilizationSeconds": 0,
                **(autoscaling or {}),
            },
        }
    )


def snap(*tiers: tuple[str, int], partitions: int = 100) -> LagSnapshot:
    """Lag per tier, every tier with `partitions` partitions."""
    tl = tuple(TierLag(name, lag, partitions, lag) for name, lag in tiers)
    return LagSnapshot(
        tiers=tl,
        total=sum(t.lag for t in tl),
        partitions_total=partitions * len(tl),
        busiest_tier_partitions=partitions,
        read_ms=1.0,
        missing_commits=0,
    )


def lag(total: int, partitions: int = 100) -> LagSnapshot:
    return snap(("turbo", total), partitions=partitions)


def obs(warm: int = 1, cold: int = 0, tput: float | None = None) -> Observed:
    return Observed(
        warm_replicas=warm,
        warm_ready=warm,
        cold_replicas=cold,
        cold_ready=cold,
        throughput_per_worker=tput,
    )


FRESH = ScalerState()


# --- warm first, bounds, cold activation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "total", "warm", "cold"),
    [
        (spec(), 0, 1, 0),  # idle: warm.minReplicas
        (spec(), 1, 1, 0),
        (spec(), 3, 2, 0),  # ceil(3 / 2)
        (spec(), 8, 4, 0),  # warm full
        (spec(), 9, 4, 1),  # overflow to cold, lag 9 > activationLag 5
        (spec(), 100, 4, 8),  # cold capped at its max
        (spec(warm={"minReplicas": 0}), 0, 0, 0),  # min 0: a pool may idle at zero
        (spec(warm={"minReplicas": 3}), 0, 3, 0),
        (spec(warm={"minReplicas": 0, "maxReplicas": 0}), 6, 0, 3),  # cold only
        (spec(cold={"maxReplicas": 0}), 100, 4, 0),  # no cold pool
        # activation threshold: overflow exists, but the lag is not above activationLag
        (spec(warm={"maxReplicas": 1}, cold={"activationLag": 10}), 4, 1, 0),
        (spec(warm={"maxReplicas": 1}, cold={"activationLag": 10}), 10, 1, 0),
        (spec(warm={"maxReplicas": 1}, cold={"activationLag": 10}), 11, 1, 5),
        (
            spec(warm={"maxReplicas": 1}, cold={"activationLag": 0}),
            2,
            1,
            0,
        ),  # 1 worker: no overflow
        (spec(warm={"maxReplicas": 1}, cold={"activationLag": 0}), 3, 1, 1),
    ],
)
def test_warm_first_then_cold(pool: GenerationPoolSpec, total: int, warm: int, cold: int) -> None:
    d = decide(pool, lag(total), obs(), FRESH, now=0)
    assert (d.warm, d.cold, d.desired_total) == (warm, cold, warm + cold)
    assert d.raw_total == -(-total // 2)
    assert not d.held and not d.capped
    assert d.state.cold_active == (cold > 0)


def test_reason_names_the_inputs_and_bounds() -> None:
    d = decide(spec(), snap(("turbo", 30), ("fast", 7), ("relax", 0)), obs(), FRESH, now=0)
    assert (
        d.reason == "lag 37 (turbo 30, fast 7, relax 0) / target 2 per worker = 19 workers; "
        "7 workers over cold.maxReplicas → warm 4 (max), cold 8 (max)"
    )
    idle = decide(spec(), lag(0), obs(), FRESH, now=0)
    assert idle.reason.endswith("→ warm 1 (min), cold 0")


def test_cold_asleep_is_explained() -> None:
    d = decide(spec(warm={"maxReplicas": 1}, cold={"activationLag": 10}), lag(4), obs(), FRESH, 0)
    assert "cold asleep: lag 4 <= activationLag 10" in d.reason


def test_cold_stays_active_until_overflow_is_zero_then_sleeps() -> None:
    pool = spec(
        warm={"maxReplicas": 2}, cold={"activationLag": 10}, autoscaling={"targetLagPerWorker": 1}
    )
    state, o = FRESH, obs()
    steps = [  # (lag, warm, cold)
        (4, 2, 0),  # asleep: 4 <= 10
        (20, 2, 8),  # wakes
        (4, 2, 2),  # awake: below the threshold it still takes the overflow
        (2, 2, 0),  # overflow 0: back to sleep
        (4, 2, 0),  # asleep again: needs lag > 10 to wake
    ]
    for t, (total, warm, cold) in enumerate(steps):
        d = decide(pool, lag(total), o, state, now=t * 10)
        assert (d.warm, d.cold) == (warm, cold), (t, d.reason)
        state, o = d.state, obs(d.warm, d.cold)


def test_running_cold_pods_count_as_awake_after_an_operator_restart() -> None:
    pool = spec(warm={"maxReplicas": 1}, cold={"activationLag": 10})
    d = decide(pool, lag(4), obs(warm=1, cold=1), ScalerState(), now=0)
    assert d.cold == 1


# --- partition cap -------------------------------------------------------------------------------


def test_capped_at_the_busiest_tier_partitions() -> None:
    d = decide(spec(), snap(("turbo", 30), ("fast", 7), partitions=6), obs(), FRESH, now=0)
    assert (d.warm, d.cold, d.raw_total, d.capped) == (4, 2, 19, True)
    assert "capped at 6 partitions" in d.reason
    assert d.reason.startswith("lag 37 (turbo 30, fast 7) / target 2 per worker = 19 workers")


def test_allow_idle_consumers_lifts_the_cap() -> None:
    pool = spec(autoscaling={"allowIdleConsumers": True})
    d = decide(pool, snap(("turbo", 30), ("fast", 7), partitions=6), obs(), FRESH, now=0)
    assert (d.warm, d.cold, d.capped) == (4, 8, False)
    assert "capped" not in d.reason


@pytest.mark.parametrize(
    ("total", "partitions", "warm_min", "expect"),
    [
        (12, 6, 1, 6),  # exactly at the cap: not capped
        (14, 6, 1, 6),
        (100, 2, 4, 4),  # warm.minReplicas is explicit and wins over the cap
        (100, 1, 1, 1),
    ],
)
def test_cap_cases(total: int, partitions: int, warm_min: int, expect: int) -> None:
    pool = spec(warm={"minReplicas": warm_min, "maxReplicas": 4})
    d = decide(pool, lag(total, partitions), obs(), FRESH, now=0)
    assert d.desired_total == expect
    assert d.capped == (-(-total // 2) > partitions)


# --- SLO mode ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tput", "total", "workers", "note"),
    [
        (0.5, 23, 5, "0.5 img/s per worker x 10s wait = 5 per worker"),  # ceil(23 / 5)
        (0.5, 25, 5, "x 10s wait"),
        (0.5, 26, 6, "x 10s wait"),
        (2.0, 23, 2, "2 img/s per worker"),  # fast workers: fewer needed than target mode's 12
        (1.0, 30, 3, "(1 img/s per worker x 10s wait = 10 per worker) = 3 workers"),
        (None, 23, 12, "SLO mode: throughput unknown"),  # falls back to targetLagPerWorker
        (0.0, 23, 12, "SLO mode: throughput unknown"),  # no busy worker measured yet
    ],
)
def test_slo_mode(tput: float | None, total: int, workers: int, note: str) -> None:
    pool = spec(warm={"maxReplicas": 20}, autoscaling={"targetWaitSeconds": 10})
    d = decide(pool, lag(total), obs(tput=tput), FRESH, now=0)
    assert d.raw_total == workers
    assert d.warm == workers
    assert note in d.reason


def test_slo_mode_float_noise_adds_no_worker() -> None:
    # 0.58 * 50 = 28.999999999999996: a lag of 87 is exactly 3 workers, not 4.
    pool = spec(warm={"maxReplicas": 20}, autoscaling={"targetWaitSeconds": 50})
    assert decide(pool, lag(87), obs(tput=0.58), FRESH, now=0).raw_total == 3
    assert decide(pool, lag(88), obs(tput=0.58), FRESH, now=0).raw_total == 4


def test_throughput_ignored_without_target_wait() -> None:
    d = decide(spec(warm={"maxReplicas": 20}), lag(23), obs(tput=100.0), FRESH, now=0)
    assert d.raw_total == 12


# --- stabilization windows -----------------------------------------------------------------------


@dataclass
class Sim:
    """Runs decide() over time with the replicas following each decision, as the operator does."""

    pool: GenerationPoolSpec
    state: ScalerState = field(default_factory=ScalerState)
    observed: Observed = field(default_factory=lambda: Observed(1, 1, 0, 0, None))

    def step(self, now: float, total: int) -> Decision:
        d = decide(self.pool, lag(total), self.observed, self.state, now)
        self.state, self.observed = d.state, obs(d.warm, d.cold)
        return d


def test_scale_down_waits_for_the_down_window() -> None:
    sim = Sim(spec(autoscaling={"scaleDownStabilizationSeconds": 300}))
    steps = [  # (time, lag, total workers)
        (0, 20, 10),  # up at once (up window 0)
        (60, 0, 10),  # lag gone: held by the highest recommendation of the last 300 s
        (120, 6, 10),
        (299, 0, 10),
        (301, 0, 3),  # t=0 left the window; t=120 asked 3
        (421, 0, 1),  # everything but zeros left the window: warm.minReplicas
    ]
    for now, total, workers in steps:
        d = sim.step(now, total)
        assert d.desired_total == workers, (now, d.reason)
    held = Sim(spec(autoscaling={"scaleDownStabilizationSeconds": 300}))
    held.step(0, 20)
    d = held.step(60, 0)
    assert "scale-down held at 10 (highest in the last 300s)" in d.reason
    assert d.state.cold_active  # still 6 cold during the window


def test_scale_up_waits_for_the_up_window() -> None:
    sim = Sim(spec(autoscaling={"scaleUpStabilizationSeconds": 60}))
    steps = [
        (0, 0, 1),
        (10, 20, 1),  # the t=0 recommendation (0 workers, and the seed 1) is still in the window
        (30, 20, 1),
        (61, 20, 10),  # only 10s in the window now
        (70, 2, 1),  # scale-down window 0: follows at once
    ]
    for now, total, workers in steps:
        d = sim.step(now, total)
        assert d.desired_total == workers, (now, d.reason)
    limited = Sim(spec(autoscaling={"scaleUpStabilizationSeconds": 60}))
    limited.step(0, 0)
    assert "scale-up limited to 1 (lowest in the last 60s)" in limited.step(10, 20).reason


def test_a_short_burst_within_the_up_window_never_scales() -> None:
    sim = Sim(spec(autoscaling={"scaleUpStabilizationSeconds": 30}))
    for now, total in [(0, 0), (5, 40), (10, 40), (15, 0), (20, 40), (40, 40)]:
        assert sim.step(now, total).desired_total == 1, now
    assert sim.step(50, 40).desired_total == 12  # 40 workers: warm 4 + cold 8 (max)


def test_fresh_state_never_scales_down_before_a_full_window() -> None:
    # Operator restarted with 10 workers running: the current count counts as a recommendation.
    pool = spec(autoscaling={"scaleDownStabilizationSeconds": 300})
    d = decide(pool, lag(0), obs(warm=4, cold=6), ScalerState(), now=1000)
    assert (d.warm, d.cold) == (4, 6)
    assert not d.changed
    later = decide(pool, lag(0), obs(warm=4, cold=6), d.state, now=1301)
    assert (later.warm, later.cold) == (1, 0)


def test_history_is_pruned_to_the_longest_window() -> None:
    sim = Sim(
        spec(autoscaling={"scaleUpStabilizationSeconds": 20, "scaleDownStabilizationSeconds": 50})
    )
    for now in range(0, 1000, 5):
        sim.step(now, now % 7)
    assert all(995 - r.at <= 50 for r in sim.state.history)
    assert len(sim.state.history) == 11


def test_windows_zero_follow_every_recommendation() -> None:
    sim = Sim(spec())
    for now, total, workers in [(0, 20, 10), (5, 0, 1), (10, 8, 4), (15, 3, 2), (20, 40, 12)]:
        assert sim.step(now, total).desired_total == workers


# --- missing metrics -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "warm", "cold", "changed"),
    [
        (obs(warm=3, cold=2), 3, 2, False),  # hold as is
        (obs(warm=0, cold=0), 1, 0, True),  # never below warm.minReplicas
        (obs(warm=6, cold=9), 4, 8, True),  # spec maxima still apply
        (obs(warm=4, cold=8), 4, 8, False),
    ],
)
def test_missing_metrics_hold_replicas(
    observed: Observed, warm: int, cold: int, changed: bool
) -> None:
    state = ScalerState(history=(Recommendation(0, 7),), cold_active=True)
    d = decide(spec(), None, observed, state, now=10, lag_error="Kafka at k:9092 unreachable")
    assert (d.warm, d.cold, d.held, d.changed) == (warm, cold, True, changed)
    assert "Kafka at k:9092 unreachable" in d.reason
    assert d.reason.startswith(f"holding warm {warm}, cold {cold}")
    assert d.state.history == state.history  # an outage adds no recommendation
    assert d.state.cold_active


def test_missing_metrics_never_scale_to_zero_even_with_min_zero() -> None:
    pool = spec(warm={"minReplicas": 0})
    sim_state = ScalerState()
    o = obs(warm=2, cold=3)
    for now in range(0, 3600, 60):
        d = decide(pool, None, o, sim_state, now=now)
        assert (d.warm, d.cold) == (2, 3)
        assert "no queue metrics" in d.reason


def test_recovery_after_an_outage_uses_the_window_from_before() -> None:
    sim = Sim(spec(autoscaling={"scaleDownStabilizationSeconds": 300}))
    sim.step(0, 20)
    d = decide(sim.pool, None, sim.observed, sim.state, now=100)
    assert d.desired_total == 10 and d.held
    assert sim.step(200, 0).desired_total == 10  # t=0 still within 300 s
    assert sim.step(301, 0).desired_total == 1


# --- baseline is replicas, not ready pods --------------------------------------------------------


def test_pending_pods_are_not_failures() -> None:
    # 4 warm + 6 cold asked for, none ready (waiting for GPU nodes): no change, no extra scaling.
    pending = Observed(
        warm_replicas=4, warm_ready=0, cold_replicas=6, cold_ready=0, throughput_per_worker=None
    )
    d = decide(spec(), lag(20), pending, ScalerState(cold_active=True), now=0)
    assert (d.warm, d.cold, d.changed) == (4, 6, False)


def test_changed_and_last_scale_at() -> None:
    d = decide(spec(), lag(8), obs(), FRESH, now=42)
    assert d.changed and d.state.last_scale_at == 42
    same = decide(spec(), lag(8), obs(warm=4), d.state, now=50)
    assert not same.changed and same.state.last_scale_at == 42


# --- skewed keys: only partitions holding a backlog can use a consumer -----------------------


def skewed(lags: list[int]) -> LagSnapshot:
    """One tier whose partitions hold `lags` (per-partition detail present)."""
    from imagegen_operator.scaling.lag import compute_lag

    topic = "imagegen.ns.p.turbo"
    end = {(topic, i): v for i, v in enumerate(lags)}
    committed: dict[tuple[str, int], int | None] = {(topic, i): 0 for i in range(len(lags))}
    begin = {(topic, i): 0 for i in range(len(lags))}
    return compute_lag({"turbo": topic}, end, committed, begin)


@pytest.mark.parametrize(
    ("lags", "total", "note"),
    [
        ([40, 0, 0, 0, 0, 0], 1, "only 1 partitions hold the backlog"),  # one hot key
        ([20, 20, 0, 0, 0, 0], 2, "only 2 partitions hold the backlog"),
        ([10, 10, 10, 10, 10, 10], 6, "capped at 6 partitions (busiest tier"),
    ],
)
def test_skewed_partitions_cap_at_the_lagging_ones(lags: list[int], total: int,
                                                   note: str) -> None:
    pool = spec(warm={"minReplicas": 0, "maxReplicas": 8})
    d = decide(pool, skewed(lags), obs(warm=0), FRESH, now=0.0)
    assert d.total == total
    assert d.capped
    assert note in d.reason


def test_skew_cap_lifted_by_allow_idle_consumers() -> None:
    pool = spec(warm={"minReplicas": 0, "maxReplicas": 8},
                autoscaling={"allowIdleConsumers": True})
    d = decide(pool, skewed([40, 0, 0, 0]), obs(warm=0), FRESH, now=0.0)
    assert d.total == 16 and not d.capped  # warm 8 + cold 8: the maxima, not the partitions


# --- the one place that decides replicas (bounds moved here from the builders) --------------------


@pytest.mark.parametrize(("warm", "cold", "bounds", "expected"), [
    (None, 0, {}, (1, 0)),                          # no Deployment yet: warm minimum
    (3, 2, {}, (3, 2)),
    (9, 20, {}, (4, 8)),                            # clamped to warm.max / cold.max
    (0, 0, {"minReplicas": 2, "maxReplicas": 5}, (2, 0)),  # never below the minimum
])
def test_bounds_are_decided_by_the_policy(warm: int | None, cold: int, bounds: dict[str, Any],
                                          expected: tuple[int, int]) -> None:
    observed = Observed(warm_replicas=warm, warm_ready=0, cold_replicas=cold, cold_ready=0)
    held = decide(spec(warm=bounds), None, observed, FRESH, now=0)
    assert (held.warm, held.cold) == expected
    if warm is None:  # the baseline of a new pool is its minimum: no move, no Scaled event
        assert held.moves == ()
        assert decide(spec(warm=bounds), lag(0), observed, FRESH, now=0).moves == ()


def test_moves_name_the_roles_that_change() -> None:
    d = decide(spec(), lag(20), obs(warm=1, cold=0), FRESH, now=0)
    assert d.moves == (("warm", 1, 4), ("cold", 0, 6))
    assert decide(spec(), lag(2), obs(warm=1), FRESH, now=0).moves == ()


# --- issue 17 item 9: an outage longer than the down window -------------------------------------


def test_outage_longer_than_the_down_window_never_scales_down_at_once() -> None:
    """10 workers, lag unreadable for longer than the down window (holds record nothing), then
    the first good read shows an empty queue: the current 10 count as a recommendation made now,
    so the pool waits a full window before going down to 1."""
    sim = Sim(spec(autoscaling={"scaleDownStabilizationSeconds": 300}))
    assert sim.step(0, 20).desired_total == 10
    state = sim.state
    for now in range(10, 700, 10):
        held = decide(sim.pool, None, sim.observed, state, now=now)
        assert held.desired_total == 10 and held.held
        state = held.state
    sim.state = state
    assert sim.step(700, 0).desired_total == 10  # before: 1 at once
    assert sim.step(999, 0).desired_total == 10
    assert sim.step(1001, 0).desired_total == 1
