"""Status aggregation: what kubectl shows, computed from observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from imagegen_api.messages import Heartbeat
from imagegen_api.specs import GenerationPoolSpec
from imagegen_operator.problems import Problem, Reason
from imagegen_operator.status import (
    PoolObservation,
    QueueObservation,
    RoleObservation,
    merge_conditions,
    model_status,
    pool_status,
    status_differs,
)

SPEC = GenerationPoolSpec.model_validate({"models": ["tiny"], "warm": {"minReplicas": 1}})
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MISSING = Problem(Reason.MODEL_MISSING, "ImageModel 'x' not found")


def obs(**kw: object) -> PoolObservation:
    base: dict[str, object] = dict(
        generation=3, warm=RoleObservation(desired=2, replicas=2, ready=2),
        cold=RoleObservation(desired=1, replicas=1, ready=0, pending=1),
        queue=QueueObservation(lag_by_tier={"turbo": 4, "fast": 1}, partitions=6))
    base.update(kw)
    return PoolObservation(**base)  # type: ignore[arg-type]


def cond(status: object, kind: str) -> tuple[str, str]:
    for c in status.conditions:  # type: ignore[attr-defined]
        if c.type == kind:
            return c.status, c.reason
    raise AssertionError(f"no condition {kind}")


def test_columns() -> None:
    st = pool_status(SPEC, obs(), None, T0)
    assert (st.model, st.ready, st.desired, st.warm.ready, st.cold.ready, st.queue.lag) == (
        "tiny", "2/3", "2/1", 2, 0, 5)
    assert st.queue.lag_by_tier == {"turbo": 4, "fast": 1}
    assert st.observed_generation == 3
    assert all(c.observed_generation == 3 for c in st.conditions)


@pytest.mark.parametrize(("kw", "kind", "expected"), [
    ({}, "Ready", ("True", "WorkersReady")),
    ({}, "Scaling", ("True", "ScalingUp")),
    ({"warm": RoleObservation(desired=1, replicas=1, ready=0)}, "Ready",
     ("False", "WaitingForWorkers")),
    ({"problems": [MISSING]}, "Ready", ("False", "Degraded")),
    # The first problem's reason, not a generic one (was ReconcileProblem).
    ({"problems": [MISSING]}, "Degraded", ("True", "ModelMissing")),
    ({"problems": [Problem(Reason.KAFKA_UNREACHABLE, "Kafka at k:1 unreachable"), MISSING]},
     "Degraded", ("True", "KafkaUnreachable")),
    ({"problems": [Problem(Reason.IMAGE_NOT_ALLOWED, "image x not allowed")]}, "Degraded",
     ("True", "ImageNotAllowed")),
    ({}, "Degraded", ("False", "AsExpected")),
    ({"stalled": ["t:0 (lag 3, no progress for 130s)"]}, "Degraded", ("True", "PartitionStalled")),
    ({"stalled": ["t:0 (lag 3, no progress for 130s)"]}, "Ready", ("True", "WorkersReady")),
    ({"queue": QueueObservation(error="Kafka down")}, "QueueMetricsAvailable",
     ("False", "LagUnavailable")),
    ({}, "QueueMetricsAvailable", ("True", "LagRead")),
    ({"scaling_held": True, "scale_reason": "held"}, "Scaling",
     ("False", "HoldingOnMissingMetrics")),
    ({"cold": RoleObservation()}, "Scaling", ("False", "Stable")),
])
def test_conditions(kw: dict[str, object], kind: str, expected: tuple[str, str]) -> None:
    assert cond(pool_status(SPEC, obs(**kw), None, T0), kind) == expected


def test_transition_time_kept_while_status_unchanged() -> None:
    first = pool_status(SPEC, obs(), None, T0)
    later = pool_status(SPEC, obs(), first, T0 + timedelta(minutes=5))
    ready = next(c for c in later.conditions if c.type == "Ready")
    assert ready.last_transition_time == "2026-11-25T12:00:00Z"
    flipped = pool_status(SPEC, obs(problems=[MISSING]), later, T0 + timedelta(minutes=6))
    ready = next(c for c in flipped.conditions if c.type == "Ready")
    assert ready.last_transition_time == "2026-11-25T12:06:00Z"


def test_missing_lag_keeps_last_numbers() -> None:
    first = pool_status(SPEC, obs(), None, T0)
    after = pool_status(SPEC, obs(queue=QueueObservation(error="down")), first, T0)
    assert after.queue.lag == 5


def test_scale_time_and_reason() -> None:
    st = pool_status(SPEC, obs(scaled=True, scale_reason="lag 5"), None, T0)
    assert (st.last_scale_time, st.last_scale_reason) == ("2026-11-25T12:00:00Z", "lag 5")
    kept = pool_status(SPEC, obs(scale_reason="other"), st, T0 + timedelta(seconds=5))
    assert kept.last_scale_reason == "lag 5"


def test_throughput_counts_fresh_heartbeats_only() -> None:
    now = T0.timestamp()

    def hb(worker: str, age: float, ips: float, busy: int) -> Heartbeat:
        return Heartbeat(worker=worker, state="ready", ready=True, images_per_second=ips,
                         in_flight=busy, interval_seconds=5, updated_at=now - age,
                         started_at=now - 100)
    beats = [hb("a", 1, 0.5, 1), hb("b", 2, 0.25, 0), hb("gone", 60, 9.0, 1)]
    st = pool_status(SPEC, obs(heartbeats=beats), None, T0)
    assert st.throughput == 45.0  # (0.5 + 0.25) images/s * 60
    assert st.busy_workers == 1


def test_merge_conditions_replaces_by_type() -> None:
    a = pool_status(SPEC, obs(), None, T0).conditions
    merged = merge_conditions(a, a[:1], T0)
    assert [c.type for c in merged] == ["Ready"]


@pytest.mark.parametrize(("cached", "problems", "ready", "reason"), [
    ("n/a", [], True, "Resolved"),
    ("Ready", [], True, "Resolved"),
    ("InProgress", [], False, "Prefetching"),
    ("Failed", [], False, "PrefetchFailed"),
    ("n/a", ["bad"], False, "Invalid"),
])
def test_model_status(cached: str, problems: list[str], ready: bool, reason: str) -> None:
    st = model_status(2, resolved_source="s3://w/x", cached=cached, used_by=["p"],
                      problems=problems, deleting_blocked=None, old=None, now=T0)
    assert st.ready is ready
    assert cond(st, "Ready")[1] == reason
    assert cond(st, "InUse") == ("True", "ServedByPools")


def test_model_deletion_blocked_condition_names_pools() -> None:
    st = model_status(1, resolved_source="x", cached="n/a", used_by=["a", "b"], problems=[],
                      deleting_blocked="pools a, b", old=None, now=T0)
    assert cond(st, "InUse") == ("True", "DeletionBlocked")


def test_degraded_message_lists_every_problem() -> None:
    st = pool_status(SPEC, obs(problems=[MISSING, Problem(Reason.KAFKA_UNREACHABLE, "k down")]),
                     None, T0)
    degraded = next(c for c in st.conditions if c.type == "Degraded")
    assert degraded.message == "ImageModel 'x' not found; k down"


# --- no status PATCH when nothing changed -----------------------------------------------------


def test_same_status_twice_is_no_change() -> None:
    first = pool_status(SPEC, obs(), None, T0).to_wire()
    # A later pass with the same observations: transition times kept, nothing to write.
    again = pool_status(SPEC, obs(), pool_status(SPEC, obs(), None, T0),
                        T0 + timedelta(minutes=3)).to_wire()
    assert not status_differs(again, first)
    assert status_differs(pool_status(SPEC, obs(queue=QueueObservation(
        lag_by_tier={"turbo": 5}, partitions=6)), None, T0).to_wire(), first)


@pytest.mark.parametrize(("desired", "current", "differs"), [
    ({"a": 1}, {"a": 1, "b": 2}, False),           # a merge patch keeps fields it does not name
    ({"a": {"x": 1}}, {"a": {"x": 1, "y": 2}}, False),
    ({"a": {"x": 1}}, {"a": {"x": 2}}, True),
    ({"a": [1, 2]}, {"a": [1]}, True),              # lists are replaced whole
    ({"a": None}, {}, False),                       # null and absent are the same
    ({"a": 1}, None, True),
    ({}, {"a": 1}, False),
])
def test_status_differs(desired: dict[str, object], current: dict[str, object] | None,
                        differs: bool) -> None:
    assert status_differs(desired, current) is differs


def test_ready_accounts_for_an_enabled_gateway() -> None:
    from imagegen_api.specs import GatewayStatus

    with_gw = GenerationPoolSpec.model_validate(
        {"models": ["tiny"], "warm": {"minReplicas": 1},
         "gateway": {"enabled": True, "auth": {"secretName": "keys"}}})
    down = pool_status(with_gw, obs(gateway=GatewayStatus(url="u", replicas=2, ready=0)),
                       None, T0)
    assert cond(down, "Ready") == ("False", "WaitingForGateway")
    up = pool_status(with_gw, obs(gateway=GatewayStatus(url="u", replicas=2, ready=1)), None, T0)
    assert cond(up, "Ready") == ("True", "WorkersReady")
    ready = next(c for c in up.conditions if c.type == "Ready")
    assert "1/2 gateway pods ready" in ready.message
    # Without a gateway in the spec, its absence changes nothing.
    assert cond(pool_status(SPEC, obs(), None, T0), "Ready") == ("True", "WorkersReady")
