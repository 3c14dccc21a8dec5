"""The age of a tier's oldest pending request, estimated from when end offsets moved."""

from __future__ import annotations

from imagegen_operator.scaling.backlog_age import oldest_ages, record_ends
from imagegen_operator.scaling.lag import LagSnapshot, compute_lag

TOPICS = {"turbo": "t.turbo", "relax": "t.relax"}


def snap(ends: dict[str, int], committed: dict[str, int]) -> LagSnapshot:
    return compute_lag(TOPICS, {(TOPICS[t], 0): e for t, e in ends.items()},
                       {(TOPICS[t], 0): c for t, c in committed.items()}, {})


def test_age_counts_from_when_the_oldest_pending_offset_was_produced() -> None:
    history: dict = {}
    passes = [  # (now, relax end, relax committed, expected relax age)
        (0.0, 0, 0, 0.0),      # empty
        (5.0, 3, 0, 0.0),      # three requests seen now: age 0
        (10.0, 6, 0, 5.0),     # more arrive; the oldest (offset 0) was seen at 5
        (20.0, 6, 3, 10.0),    # offsets 0-2 consumed; offset 3 appeared by 10
        (30.0, 6, 6, 0.0),     # drained
    ]
    for now, end, committed, age in passes:
        lag = snap({"turbo": 0, "relax": end}, {"turbo": 0, "relax": committed})
        history = record_ends(history, lag, now, keep=600)
        assert oldest_ages(history, lag, now) == {"turbo": 0.0, "relax": age}, now


def test_fresh_operator_counts_from_its_first_sample() -> None:
    lag = snap({"relax": 50}, {"relax": 0})
    history = record_ends({}, lag, 100.0, keep=600)
    assert oldest_ages(history, lag, 100.0)["relax"] == 0.0
    history = record_ends(history, lag, 400.0, keep=600)  # nothing moved: one sample kept
    assert len(history[("t.relax", 0)]) == 1
    assert oldest_ages(history, lag, 400.0)["relax"] == 300.0


def test_samples_are_pruned_but_the_anchor_stays() -> None:
    history: dict = {}
    for now in range(0, 1000, 10):
        history = record_ends(history, snap({"relax": now + 1}, {"relax": 0}), float(now),
                              keep=100)
    samples = history[("t.relax", 0)]
    assert len(samples) <= 12
    assert samples[0][0] <= 990 - 100 < samples[1][0]
    lag = snap({"relax": 991}, {"relax": 0})
    assert oldest_ages(history, lag, 990.0)["relax"] == 990.0 - samples[0][0]


def test_an_end_offset_going_backwards_starts_over() -> None:
    history = record_ends({}, snap({"relax": 100}, {"relax": 0}), 0.0, keep=600)
    lag = snap({"relax": 5}, {"relax": 0})  # topic recreated
    history = record_ends(history, lag, 50.0, keep=600)
    assert history[("t.relax", 0)] == ((50.0, 5),)
    assert oldest_ages(history, lag, 60.0)["relax"] == 10.0
