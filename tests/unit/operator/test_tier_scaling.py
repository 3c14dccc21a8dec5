"""Tier-aware scaling (issue 15): each tier's backlog is weighed by its promise. Warm is sized
from the whole backlog; only tiers allowed to wake the cold (spot) pool grow it. Time and the
oldest pending ages are arguments: no sleeping, no Kafka."""

from __future__ import annotations

from typing import Any

import pytest
from imagegen_api.specs import GenerationPoolSpec, Tier
from imagegen_operator.scaling.lag import LagSnapshot, TierLag
from imagegen_operator.scaling.policy import Observed, ScalerState, decide

FRESH = ScalerState()


def spec(tiers: list[dict[str, Any]] | None = None, down: int = 0,
         cold: dict[str, Any] | None = None) -> GenerationPoolSpec:
    queue = {"tiers": tiers} if tiers is not None else {}
    return GenerationPoolSpec.model_validate({
        "models": ["sdxl"],
        "warm": {"minReplicas": 1, "maxReplicas": 2},
        "cold": {"maxReplicas": 8, "activationLag": 5, **(cold or {})},
        "queue": queue,
        "autoscaling": {"targetLagPerWorker": 2, "scaleDownStabilizationSeconds": down},
    })


def snap(**lags: int) -> LagSnapshot:
    tl = tuple(TierLag(name, lag, 100, lag) for name, lag in lags.items())
    return LagSnapshot(tiers=tl, total=sum(t.lag for t in tl), partitions_total=100 * len(tl),
                       busiest_tier_partitions=100, read_ms=1.0, missing_commits=0)


def obs(warm: int = 1, cold: int = 0) -> Observed:
    return Observed(warm_replicas=warm, warm_ready=warm, cold_replicas=cold, cold_ready=cold)


# --- defaults from the promise -------------------------------------------------------------------


@pytest.mark.parametrize(("max_wait", "explicit", "mode"), [
    (10, None, "Always"),  # turbo
    (60, None, "Always"),  # fast
    (119, None, "Always"),
    (120, None, "NearMaxWait"),
    (300, None, "NearMaxWait"),  # relax
    (300, "Always", "Always"),  # the per-tier setting wins
    (10, "Never", "Never"),
])
def test_cold_wake_default_follows_max_wait(max_wait: int, explicit: str | None,
                                             mode: str) -> None:
    raw: dict[str, Any] = {"name": "t", "weight": 1, "maxWaitSeconds": max_wait}
    if explicit:
        raw["wakeCold"] = explicit
    assert Tier.model_validate(raw).cold_wake == mode


def test_wake_cold_refuses_unknown_values() -> None:
    with pytest.raises(ValueError, match="wakeCold"):
        Tier.model_validate({"name": "t", "weight": 1, "wakeCold": "Sometimes"})


# --- the decision ------------------------------------------------------------------------------


@pytest.mark.parametrize(("lags", "ages", "warm", "cold"), [
    # turbo/fast backlog drives warm and cold exactly as before
    ({"turbo": 20}, {}, 2, 8),
    ({"fast": 20}, {}, 2, 8),
    # relax alone: warm grows to its max, cold stays asleep while relax is young
    ({"relax": 200}, {"relax": 0.0}, 2, 0),
    ({"relax": 200}, {"relax": 149.0}, 2, 0),
    # relax at half its 300s max wait: cold may wake
    ({"relax": 200}, {"relax": 150.0}, 2, 8),
    # ages absent: a patient tier counts as young
    ({"relax": 200}, {}, 2, 0),
    # mixed: cold only for what turbo asks beyond warm (turbo 8 → 4 workers, warm gives 2)
    ({"turbo": 8, "relax": 200}, {"relax": 10.0}, 2, 2),
    # turbo small enough for warm alone: cold asleep although the total overflows
    ({"turbo": 4, "relax": 200}, {"relax": 10.0}, 2, 0),
])
def test_relax_never_wakes_cold_until_near_its_max_wait(
        lags: dict[str, int], ages: dict[str, float], warm: int, cold: int) -> None:
    d = decide(spec(), snap(**lags), obs(), FRESH, now=0, ages=ages)
    assert (d.warm, d.cold) == (warm, cold)


def test_the_reason_says_which_backlog_waits_for_warm() -> None:
    d = decide(spec(), snap(turbo=8, relax=200), obs(), FRESH, now=0, ages={"relax": 10.0})
    assert ("cold for 8 of the backlog only (2 of 98 overflow workers): relax 200 waits for "
            "warm (oldest 10s < 150s, half its 300s max wait)") in d.reason
    assert d.reason.endswith("→ warm 2 (max), cold 2")


def test_activation_counts_only_the_backlog_allowed_to_wake_cold() -> None:
    pool = spec(cold={"activationLag": 10})
    # turbo 8 asks for 4 workers (2 over warm) but 8 <= activationLag 10: cold stays asleep,
    # although the total lag (208) is far above the threshold.
    d = decide(pool, snap(turbo=8, relax=200), obs(), FRESH, now=0, ages={"relax": 1.0})
    assert d.cold == 0
    assert "cold asleep: lag 8 <= activationLag 10" in d.reason


def test_per_tier_setting_always_lets_relax_wake_cold() -> None:
    tiers = [{"name": "turbo", "weight": 10, "maxWaitSeconds": 10},
             {"name": "relax", "weight": 1, "maxWaitSeconds": 300, "wakeCold": "Always"}]
    d = decide(spec(tiers), snap(turbo=0, relax=200), obs(), FRESH, now=0, ages={})
    assert (d.warm, d.cold) == (2, 8)


def test_never_keeps_cold_asleep_past_the_max_wait() -> None:
    tiers = [{"name": "batch", "weight": 1, "maxWaitSeconds": 60, "wakeCold": "Never"}]
    d = decide(spec(tiers), snap(batch=200), obs(), FRESH, now=0, ages={"batch": 3600.0})
    assert (d.warm, d.cold) == (2, 0)
    assert "batch 200 waits for warm (wakeCold Never)" in d.reason


def test_cold_shrinks_after_the_urgent_backlog_only_after_the_down_window() -> None:
    pool = spec(down=60)
    state, o = FRESH, obs()
    steps = [  # (now, turbo, relax, cold)
        (0, 20, 200, 8),     # turbo burst: cold wakes
        (30, 0, 200, 8),     # turbo drained, relax young: the down window holds cold
        (61, 0, 200, 0),     # window over: relax alone does not keep spot nodes
    ]
    for now, turbo, relax, cold in steps:
        d = decide(pool, snap(turbo=turbo, relax=relax), o, state, now=now,
                   ages={"relax": 20.0})
        assert d.cold == cold, (now, d.reason)
        state, o = d.state, obs(d.warm, d.cold)


def test_every_tier_always_is_the_plain_rule() -> None:
    tiers = [{"name": n, "weight": 1, "maxWaitSeconds": 600, "wakeCold": "Always"}
             for n in ("a", "b")]
    plain = decide(spec(tiers), snap(a=10, b=10), obs(), FRESH, now=0)
    assert (plain.warm, plain.cold) == (2, 8)
    assert "of the backlog only" not in plain.reason


# --- a pool pass: ages remembered between passes, the reason in the Event and status --------------


def test_a_relax_backlog_wakes_cold_once_it_has_waited_half_its_max_wait() -> None:
    from imagegen_api import naming
    from imagegen_api.specs import ImageModelSpec
    from imagegen_operator.builders.context import OperatorDefaults
    from imagegen_operator.pool_plan import (
        DeploymentView,
        KafkaView,
        PlanSettings,
        PoolMemory,
        PoolState,
        plan,
    )
    from imagegen_operator.scaling.lag import compute_lag

    ns, pool, t0 = "team", "p1", 1_800_000_000.0
    tiers = {t: naming.tier_topic(ns, pool, t) for t in ("turbo", "fast", "relax")}
    ends = {(topic, 0): (40 if t == "relax" else 0) for t, topic in tiers.items()}
    lag = compute_lag(tiers, ends, {}, {})
    raw = {"models": ["tiny"], "warm": {"minReplicas": 1, "maxReplicas": 2},
           "cold": {"maxReplicas": 3, "activationLag": 1}, "queue": {"partitions": 1},
           "autoscaling": {"targetLagPerWorker": 1, "scaleDownStabilizationSeconds": 0,
                           "allowIdleConsumers": True}}
    settings = PlanSettings(defaults=OperatorDefaults(kafka_bootstrap="k:9092"))
    memory = PoolMemory()
    deployments = {"warm": DeploymentView(1, 1, 1), "cold": DeploymentView(0, 0, 0)}
    seen = []
    for now in (t0, t0 + 100, t0 + 160):
        st = PoolState(namespace=ns, name=pool, uid="u", generation=1, labels={}, spec=raw,
                       status={}, now=now,
                       models={"tiny": ImageModelSpec.model_validate(
                           {"source": "builtin://tiny-sdxl"})},
                       kafka=KafkaView(label="spec", lag=lag), deployments=deployments)
        p = plan(st, memory, settings)
        memory = p.memory
        warm, cold = (c["spec"]["replicas"] for c in p.children if c["kind"] == "Deployment")
        deployments = {"warm": DeploymentView(warm, warm, warm),
                       "cold": DeploymentView(cold, cold, cold)}
        seen.append((warm, cold, p.status["queue"]["oldestSecondsByTier"]["relax"],
                     [e.message for e in p.events if e.reason == "Scaled"]))
    assert [(w, c, age) for w, c, age, _ in seen] == [(2, 0, 0), (2, 0, 100), (2, 3, 160)]
    assert "relax 40 waits for warm (oldest 0s < 150s" in seen[0][3][0]
    assert seen[2][3][0].startswith("cold 0→3: lag 40")
    assert p.tier_max_wait == {"turbo": 10, "fast": 60, "relax": 300}
