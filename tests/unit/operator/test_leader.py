"""Leader election's pure rules (operator/imagegen_operator/leader.py): when a replica takes,
renews or waits for the Lease, what it writes, and the timing checks. No API server here; the
election between real processes is tests/integration/test_leader_election.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from imagegen_operator.config import OperatorConfig
from imagegen_operator.leader import (
    Action,
    LeaseRecord,
    LeaseTimings,
    Observation,
    claim,
    decide,
    lease_body,
    micro_time,
    observe,
    released,
)

ME, OTHER = "op-a", "op-b"
T = LeaseTimings(lease_duration=15, renew_deadline=10, retry_period=2)
WALL = datetime(2026, 12, 3, 8, 0, 0, 123456, tzinfo=UTC)


def held_by(holder: str, renew: str = "2026-12-03T08:00:00.000000Z") -> LeaseRecord:
    return LeaseRecord(holder=holder, duration_seconds=15, acquire_time=renew,
                       renew_time=renew, transitions=3)


# --- decisions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("observed", "now", "expected"), [
    (None, 0.0, Action.ACQUIRE),  # no Lease yet: create it
    (Observation(held_by(ME), 100.0), 100.0, Action.RENEW),
    (Observation(held_by(ME), 100.0), 10_000.0, Action.RENEW),  # ours, even if late
    (Observation(held_by(""), 100.0), 100.0, Action.ACQUIRE),  # released
    (Observation(held_by(OTHER), 100.0), 100.0, Action.WAIT),
    (Observation(held_by(OTHER), 100.0), 114.9, Action.WAIT),  # not yet expired
    (Observation(held_by(OTHER), 100.0), 115.0, Action.ACQUIRE),  # expired by our clock
], ids=["missing", "ours", "ours-late", "released", "other", "other-fresh", "other-expired"])
def test_decide(observed: Observation | None, now: float, expected: Action) -> None:
    assert decide(observed, ME, now) is expected


def test_expiry_counts_from_when_this_replica_saw_the_record_not_its_renew_time() -> None:
    """A renewTime far in the past (a skewed clock elsewhere) does not make a Lease expired:
    only our own observation time does."""
    stale = held_by(OTHER, renew="2001-01-01T00:00:00.000000Z")
    seen = observe(None, stale, now=500.0)
    assert decide(seen, ME, 501.0) is Action.WAIT
    assert decide(seen, ME, 515.0) is Action.ACQUIRE


def test_observation_clock_restarts_only_when_the_record_changes() -> None:
    first = observe(None, held_by(OTHER), now=10.0)
    again = observe(first, held_by(OTHER), now=14.0)
    assert again.seen_at == 10.0  # unchanged record: still counting from 10
    renewed = observe(again, held_by(OTHER, renew="2026-12-03T08:00:02.000000Z"), now=16.0)
    assert renewed.seen_at == 16.0  # a renewal restarts the clock
    assert decide(renewed, ME, 29.0) is Action.WAIT
    new_holder = observe(renewed, held_by("op-c", renew="2026-12-03T08:00:02.000000Z"), now=20.0)
    assert new_holder.seen_at == 20.0


# --- what is written ---------------------------------------------------------------------------


def test_claim_of_a_missing_lease_starts_at_transition_zero() -> None:
    rec = claim(None, ME, T, WALL)
    assert rec == LeaseRecord(holder=ME, duration_seconds=15,
                              acquire_time="2026-12-03T08:00:00.123456Z",
                              renew_time="2026-12-03T08:00:00.123456Z", transitions=0)


def test_claim_from_another_holder_counts_a_transition() -> None:
    rec = claim(held_by(OTHER), ME, T, WALL)
    assert (rec.holder, rec.transitions, rec.acquire_time) == (
        ME, 4, "2026-12-03T08:00:00.123456Z")


def test_renewal_keeps_acquire_time_and_transitions() -> None:
    mine = held_by(ME)
    rec = claim(mine, ME, T, WALL)
    assert rec.acquire_time == mine.acquire_time
    assert rec.transitions == mine.transitions
    assert rec.renew_time == "2026-12-03T08:00:00.123456Z"


def test_release_clears_the_holder_and_expires_in_a_second() -> None:
    rec = released(held_by(ME), WALL)
    assert (rec.holder, rec.duration_seconds, rec.transitions) == ("", 1, 3)
    assert decide(Observation(rec, 0.0), OTHER, 0.0) is Action.ACQUIRE


def test_lease_body_carries_the_resource_version_for_optimistic_concurrency() -> None:
    body = lease_body("ops", "imagegen-operator", held_by(ME), "42")
    assert body["apiVersion"] == "coordination.k8s.io/v1" and body["kind"] == "Lease"
    assert body["metadata"] == {"name": "imagegen-operator", "namespace": "ops",
                                "resourceVersion": "42"}
    assert body["spec"]["holderIdentity"] == ME
    assert "resourceVersion" not in lease_body("ops", "x", held_by(ME), None)["metadata"]
    assert LeaseRecord.from_lease(body) == held_by(ME)


def test_from_lease_of_an_empty_spec() -> None:
    assert LeaseRecord.from_lease({"spec": {}}) == LeaseRecord(holder="", duration_seconds=0)


def test_micro_time_is_utc_with_microseconds() -> None:
    assert micro_time(WALL) == "2026-12-03T08:00:00.123456Z"


# --- timings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("timings", "message"), [
    (LeaseTimings(10, 10, 2), "must be greater than the renew deadline"),
    (LeaseTimings(15, 2, 2), "must be greater than 1.2 x the retry period"),
    (LeaseTimings(15, 10, 0), "retry period must be > 0"),
])
def test_bad_timings_refused(timings: LeaseTimings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        timings.validate()


def test_call_timeout_never_outlives_the_renew_deadline() -> None:
    for t in (T, LeaseTimings(4, 3, 1), LeaseTimings(60, 40, 10)):
        t.validate()
        assert t.call_timeout <= t.renew_deadline / 2 or t.call_timeout == 1.0


# --- configuration -----------------------------------------------------------------------------


def test_config_lease_from_the_pod() -> None:
    cfg = OperatorConfig.from_env({"POD_NAME": "op-7f9", "POD_NAMESPACE": "imagegen-system",
                                   "IMAGEGEN_LEASE_NAME": "igop",
                                   "IMAGEGEN_LEASE_DURATION_SECONDS": "6",
                                   "IMAGEGEN_LEASE_RENEW_DEADLINE_SECONDS": "4",
                                   "IMAGEGEN_LEASE_RETRY_PERIOD_SECONDS": "1"})
    assert not cfg.standalone
    assert (cfg.lease.name, cfg.lease.namespace, cfg.lease.identity) == (
        "igop", "imagegen-system", "op-7f9")
    assert cfg.lease.timings == LeaseTimings(6, 4, 1)


def test_config_defaults_are_controller_runtimes() -> None:
    cfg = OperatorConfig.from_env({"POD_NAMESPACE": "ops"})
    assert cfg.lease.timings == LeaseTimings(15, 10, 2)
    assert cfg.lease.name == "imagegen-operator" and cfg.lease.identity


def test_config_without_a_lease_namespace_is_refused_unless_standalone() -> None:
    with pytest.raises(ValueError, match=r"IMAGEGEN_LEASE_NAMESPACE \(or POD_NAMESPACE\)"):
        OperatorConfig.from_env({})
    assert OperatorConfig.from_env({"IMAGEGEN_OPERATOR_STANDALONE": "1"}).standalone


@pytest.mark.parametrize(("env", "message"), [
    ({"IMAGEGEN_LEASE_DURATION_SECONDS": "soon"}, "IMAGEGEN_LEASE_DURATION_SECONDS must be a"),
    ({"IMAGEGEN_LEASE_RETRY_PERIOD_SECONDS": "0"}, "IMAGEGEN_LEASE_RETRY_PERIOD_SECONDS must be"),
    ({"IMAGEGEN_LEASE_DURATION_SECONDS": "5"}, "lease duration .5.0 s. must be greater"),
])
def test_config_bad_lease_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorConfig.from_env({"POD_NAMESPACE": "ops", **env})
