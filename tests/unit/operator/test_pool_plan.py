"""The plan step of a pool pass, with plain data: observed state + memory → children, Events,
status, memory. No cluster, no Kafka: every rule of a pass is reachable here."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from imagegen_api import naming
from imagegen_api.messages import Heartbeat
from imagegen_api.specs import GenerationPoolSpec, ImageModelSpec
from imagegen_operator.builders import endpoints
from imagegen_operator.builders.context import OperatorDefaults
from imagegen_operator.pool_plan import (
    RESYNC_SECONDS,
    DeploymentView,
    KafkaView,
    PlanSettings,
    PodView,
    PoolMemory,
    PoolPlan,
    PoolState,
    image_allowed,
    plan,
)
from imagegen_operator.problems import Problem, Reason
from imagegen_operator.scaling.lag import compute_lag

NS, POOL = "team", "p1"
TINY = ImageModelSpec.model_validate({"source": "builtin://tiny-sdxl"})
T0 = 1_800_000_000.0
SPEC: dict[str, Any] = {
    "models": ["tiny"],
    "warm": {"minReplicas": 1, "maxReplicas": 2},
    "cold": {"maxReplicas": 2, "activationLag": 1},
    "queue": {"partitions": 4},
    "autoscaling": {"pollSeconds": 1, "targetLagPerWorker": 1,
                    "scaleDownStabilizationSeconds": 0},
}


def config(**kw: Any) -> PlanSettings:
    return PlanSettings(defaults=OperatorDefaults(kafka_bootstrap="k:9092"), **kw)


def lag_of(turbo: list[int]) -> Any:
    """A lag snapshot: the turbo tier's partitions with these lags, other tiers empty."""
    topic = naming.tier_topic(NS, POOL, "turbo")
    ends = {(topic, p): n for p, n in enumerate(turbo)}
    for tier in ("fast", "relax"):
        ends.update({(naming.tier_topic(NS, POOL, tier), p): 0 for p in range(len(turbo))})
    tiers = {t: naming.tier_topic(NS, POOL, t) for t in ("turbo", "fast", "relax")}
    return compute_lag(tiers, ends, {}, {})


def state(**kw: Any) -> PoolState:
    base: dict[str, Any] = dict(
        namespace=NS, name=POOL, uid="uid-1", generation=1, labels={}, spec=SPEC, status={},
        now=T0, models={"tiny": TINY},
        kafka=KafkaView(label="spec", lag=lag_of([0, 0, 0, 0])),
        deployments={"warm": DeploymentView(1, 1, 1), "cold": DeploymentView(0, 0, 0)})
    base.update(kw)
    return PoolState(**base)


def reasons(p: PoolPlan) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in p.events]


def condition(p: PoolPlan, kind: str) -> dict[str, Any]:
    return next(c for c in p.status["conditions"] if c["type"] == kind)


def replicas(p: PoolPlan) -> tuple[int, int]:
    deps = {c["metadata"]["name"]: c for c in p.children if c["kind"] == "Deployment"}
    return deps[f"{POOL}-warm"]["spec"]["replicas"], deps[f"{POOL}-cold"]["spec"]["replicas"]


# --- children and replicas ------------------------------------------------------------------


def test_new_pool_gets_its_children_at_the_warm_minimum() -> None:
    p = plan(state(deployments={}), PoolMemory(), config())
    assert sorted(f"{c['kind']}/{c['metadata']['name']}" for c in p.children) == [
        "ConfigMap/p1-worker-config", "Deployment/p1-cold", "Deployment/p1-warm",
        "PodDisruptionBudget/p1-warm", "Service/p1-metrics"]
    assert replicas(p) == (1, 0)
    assert ("Normal", "Scaled") not in reasons(p)
    assert p.memory.last_poll == T0 and p.memory.last_generation == 1
    assert p.problems == ()


def test_backlog_scales_warm_then_cold_and_reports_it() -> None:
    p = plan(state(kafka=KafkaView(lag=lag_of([3, 3, 2, 2]))), PoolMemory(), config())
    assert replicas(p) == (2, 2)  # capped at 4 partitions
    assert p.scaled == (("warm", 1, 2), ("cold", 0, 2))
    scaled = next(e for e in p.events if e.reason == "Scaled")
    assert scaled.message.startswith("warm 1→2, cold 0→2: ")
    assert "capped at 4 partitions" in p.status["lastScaleReason"]
    assert p.status["warm"]["desired"] == 2 and p.status["queue"]["lag"] == 10


def test_a_failed_apply_reports_the_problem_and_no_scale() -> None:
    p = plan(state(kafka=KafkaView(lag=lag_of([3, 3, 2, 2]))), PoolMemory(), config())
    failed = p.apply_failed(Problem(Reason.APPLY_FAILED, "applying children: HTTP 500"))
    assert ("Normal", "Scaled") not in reasons(failed)
    assert failed.scaled == ()
    assert condition(failed, "Degraded")["reason"] == "ApplyFailed"
    assert "lastScaleReason" not in failed.status
    assert failed.memory.scaler == p.memory.scaler  # the decision is remembered either way
    assert p.memory.applied_digest is not None
    assert failed.memory.applied_digest is None  # not applied: applied again next pass


def test_unchanged_children_are_not_written_again_until_the_resync() -> None:
    first = plan(state(), PoolMemory(), config())
    assert first.children
    again = plan(state(now=T0 + 5), first.memory, config())
    assert again.children == () and again.problems == ()
    # A manual scale of a Deployment (as the index shows it) is reverted at once ...
    drifted = state(now=T0 + 6, deployments={"warm": DeploymentView(0, 0, 0),
                                            "cold": DeploymentView(0, 0, 0)})
    assert replicas(plan(drifted, again.memory, config())) == (1, 0)
    # ... any other edit of a rendered field within RESYNC_SECONDS.
    assert plan(state(now=T0 + RESYNC_SECONDS), again.memory, config()).children
    # A change of what is rendered is applied at once.
    bigger = state(now=T0 + 7, spec={**SPEC, "batching": {"maxBatchSize": 8}})
    assert plan(bigger, again.memory, config()).children


# --- problems carry a reason -----------------------------------------------------------------


def test_missing_model_means_no_children_and_model_missing() -> None:
    missing = Problem(Reason.MODEL_MISSING, "ImageModel 'tiny' not found in namespace team")
    p = plan(state(models={}, problems=(missing,)), PoolMemory(), config())
    assert p.children == ()
    assert condition(p, "Degraded")["reason"] == "ModelMissing"
    assert condition(p, "Ready")["status"] == "False"


def test_no_bootstrap_is_kafka_not_configured() -> None:
    p = plan(state(kafka=KafkaView(configured=False, lag_error="no Kafka bootstrap servers "
                                   "configured")), PoolMemory(), config())
    assert condition(p, "Degraded")["reason"] == "KafkaNotConfigured"
    assert naming.ENV_KAFKA_BOOTSTRAP in condition(p, "Degraded")["message"]
    assert condition(p, "Scaling")["reason"] == "HoldingOnMissingMetrics"


def test_unreadable_reference_is_secret_missing_not_also_unconfigured() -> None:
    ref = Problem(Reason.SECRET_MISSING, "spec.queue.bootstrapServersFrom (Secret k, key url): "
                  "read Secret team/k: HTTP 404: Secret not found")
    p = plan(state(problems=(ref,), kafka=KafkaView(configured=False, lag_error="x")),
             PoolMemory(), config())
    assert [pr.reason for pr in p.problems] == [Reason.SECRET_MISSING]


def test_kafka_unreachable_warns_once_per_outage() -> None:
    down = KafkaView(topics_key=("k:1", ("t",), 4), topics_error="Kafka at k:1 unreachable",
                     lag_error="reading lag failed")
    first = plan(state(kafka=down), PoolMemory(), config())
    assert ("Warning", "KafkaUnavailable") in reasons(first)
    assert ("Warning", "QueueMetricsUnavailable") in reasons(first)
    assert condition(first, "Degraded")["reason"] == "KafkaUnreachable"
    second = plan(state(kafka=down), first.memory, config())
    assert reasons(second) == []
    up = KafkaView(topics_key=("k:1", ("t",), 4), topics_actions=("created topics t",),
                   lag=lag_of([0, 0, 0, 0]))
    back = plan(state(kafka=up), second.memory, config())
    assert reasons(back) == [("Normal", "TopicsReady"), ("Normal", "QueueMetricsRestored")]
    assert back.memory.topics_ensured == ("k:1", ("t",), 4)
    assert not back.memory.kafka_failing


def test_image_outside_the_allowed_registries_gets_no_workers() -> None:
    cfg = config(allowed_images=("registry.internal/imagegen/",))
    evil = state(spec={**SPEC, "worker": {"image": "docker.io/someone/miner:1"}})
    p = plan(evil, PoolMemory(), cfg)
    assert p.children == ()
    degraded = condition(p, "Degraded")
    assert degraded["reason"] == "ImageNotAllowed"
    assert "docker.io/someone/miner:1" in degraded["message"]
    assert "IMAGEGEN_ALLOWED_IMAGES" in degraded["message"]
    ok = state(spec={**SPEC, "worker": {"image": "registry.internal/imagegen/worker:1"}})
    assert plan(ok, PoolMemory(), cfg).children


@pytest.mark.parametrize(("image", "prefixes", "allowed"), [
    ("anything:1", (), True),
    ("registry.internal/imagegen/worker:1", ("registry.internal",), True),
    ("registry.internal.evil.io/worker:1", ("registry.internal",), False),
    ("registry.internal/imagegen/worker:1", ("registry.internal/imagegen/worker",), True),
    ("registry.internal/imagegen/worker-evil:1", ("registry.internal/imagegen/worker",), False),
    ("ghcr.io/x/y@sha256:ab", ("ghcr.io/x/",), True),
])
def test_image_prefix_matches_at_a_boundary(image: str, prefixes: tuple[str, ...],
                                            allowed: bool) -> None:
    assert image_allowed(image, prefixes) is allowed


def test_invalid_spec_is_reported_and_memory_kept() -> None:
    mem = PoolMemory(last_poll=5.0, last_generation=1)
    p = plan(state(spec={"models": []}), mem, config())
    assert p.children == () and p.memory is mem
    assert p.problems[0].reason == Reason.INVALID_SPEC
    assert [c["reason"] for c in p.status["conditions"]] == ["InvalidSpec", "InvalidSpec"]


# --- no status PATCH when nothing changed ------------------------------------------------------


def test_second_identical_pass_changes_no_status() -> None:
    first = plan(state(), PoolMemory(), config())
    assert first.status_changed
    again = plan(state(status=first.status, now=T0 + 5), first.memory, config())
    assert not again.status_changed
    moved = plan(state(status=first.status, now=T0 + 10,
                       kafka=KafkaView(lag=lag_of([1, 0, 0, 0]))), again.memory, config())
    assert moved.status_changed


# --- scale-down ranking and stalls ------------------------------------------------------------


def heartbeat(worker: str, in_flight: int) -> Heartbeat:
    return Heartbeat(worker=worker, state="ready", ready=True, in_flight=in_flight,
                     interval_seconds=1, updated_at=T0, started_at=T0 - 60)


def test_scale_down_ranks_the_shrinking_role_idle_first() -> None:
    pods = (PodView("c1", "cold", "Running", True), PodView("c2", "cold", "Running", True),
            PodView("c3", "cold", "Pending", False), PodView("w1", "warm", "Running", True),
            PodView("c4", "cold", "Running", True, deleting=True))
    s = state(deployments={"warm": DeploymentView(2, 2, 2), "cold": DeploymentView(2, 2, 1)},
              pods=pods, heartbeats=(heartbeat("c1", 3), heartbeat("c2", 0)))
    p = plan(s, PoolMemory(), config())
    assert replicas(p) == (1, 0)
    assert dict(p.deletion_costs) == {"c1": 1003, "c2": 0, "c3": -100, "w1": 0}


def test_a_backlog_that_does_not_move_is_reported_once() -> None:
    stuck = KafkaView(lag=lag_of([2, 0, 0, 0]))
    s = state(kafka=stuck, deployments={"warm": DeploymentView(1, 1, 1),
                                         "cold": DeploymentView(0, 0, 0)})
    first = plan(s, PoolMemory(), config(stall_seconds=10))
    assert ("Warning", "PartitionStalled") not in reasons(first)
    later = plan(replace(s, now=T0 + 16), first.memory, config(stall_seconds=10))
    assert ("Warning", "PartitionStalled") in reasons(later)
    assert condition(later, "Degraded")["reason"] == "PartitionStalled"
    again = plan(replace(s, now=T0 + 17), later.memory, config(stall_seconds=10))
    assert ("Warning", "PartitionStalled") not in reasons(again)


def test_no_ready_worker_means_waiting_not_stalled() -> None:
    s = state(kafka=KafkaView(lag=lag_of([2, 0, 0, 0])),
              deployments={"warm": DeploymentView(1, 1, 0), "cold": DeploymentView(0, 0, 0)})
    p = plan(replace(s, now=T0 + 100), plan(s, PoolMemory(), config()).memory, config())
    assert p.memory.stalls == {}
    assert condition(p, "Degraded")["reason"] == "AsExpected"


# --- endpoints: one resolution, Secrets never echoed --------------------------------------------


def _spec(queue: dict[str, Any]) -> GenerationPoolSpec:
    return GenerationPoolSpec.model_validate({"models": ["tiny"], "queue": queue})


def test_endpoint_order_spec_reference_default() -> None:
    d = OperatorDefaults(kafka_bootstrap="default:9092")
    assert endpoints.kafka(_spec({"bootstrapServers": "lit:1"}), d).value() == "lit:1"
    ref = endpoints.kafka(_spec({"bootstrapServersFrom": {
        "secretKeyRef": {"name": "kafka", "key": "url"}}}), d)
    assert ref.source == "reference" and ref.value("secret:9093") == "secret:9093"
    assert endpoints.kafka(_spec({}), d).value() == "default:9092"
    assert endpoints.kafka(_spec({}), OperatorDefaults()).source == "none"


def test_a_value_read_from_a_secret_is_never_echoed() -> None:
    ep = endpoints.kafka(_spec({"bootstrapServersFrom": {
        "secretKeyRef": {"name": "kafka", "key": "url"}}}), OperatorDefaults())
    text = ep.redact("Kafka at user:pw@broker:9093 unreachable: timed out", "user:pw@broker:9093")
    assert "broker" not in text and "pw" not in text
    assert "bootstrapServersFrom (Secret kafka, key url)" in text
    literal = endpoints.kafka(_spec({"bootstrapServers": "b:1"}), OperatorDefaults())
    assert literal.redact("Kafka at b:1 unreachable", "b:1") == "Kafka at b:1 unreachable"



def test_a_read_write_once_cache_claim_with_warm_and_cold_workers_is_degraded() -> None:
    cached = ImageModelSpec.model_validate(
        {"source": "s3://weights/tiny", "prefetch": {"claimName": "tiny-cache"}})
    once = plan(state(models={"tiny": cached}, claim_modes={"tiny-cache": ("ReadWriteOnce",)}),
                PoolMemory(), config())
    degraded = condition(once, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "CacheClaimPlacement"
    assert "tiny-cache" in degraded["message"]
    assert once.children  # the workers are still rendered: the condition says why some hang
    many = plan(state(models={"tiny": cached}, claim_modes={"tiny-cache": ("ReadWriteMany",)}),
                PoolMemory(), config())
    assert condition(many, "Degraded")["status"] == "False"
