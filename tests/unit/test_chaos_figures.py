"""The chaos suite's figure arithmetic (tests/chaos/figures.py): answer rates, time back to
full throughput, which request ids diverged. No servers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.chaos.figures import Figures, divergent, rate, recovery_seconds


class TestRate:
    def test_counts_answers_in_a_half_open_window(self) -> None:
        times = [0.0, 0.5, 1.0, 1.5, 2.0]
        assert rate(times, 0.0, 2.0) == 2.0  # 4 answers in [0, 2)
        assert rate(times, 1.0, 1.5) == 2.0  # 1 answer in half a second

    def test_empty_or_inverted_window_is_zero(self) -> None:
        assert rate([1.0], 2.0, 2.0) == 0.0
        assert rate([1.0], 3.0, 2.0) == 0.0


class TestRecovery:
    def test_first_window_back_at_the_share_of_normal(self) -> None:
        # 10/s until 10 s, nothing until 20 s, 2/s until 25 s, then 10/s again
        times = ([i / 10 for i in range(100)] + [20 + i / 2 for i in range(10)]
                 + [25 + i / 10 for i in range(100)])
        got = recovery_seconds(times, after=20.0, normal=10.0, until=40.0)
        # [23.5, 28.5) holds 3 + 35 answers (< 40); [24, 29) holds 2 + 40: back at 29 s
        assert got == 9.0

    def test_none_when_it_never_comes_back(self) -> None:
        assert recovery_seconds([1.0, 2.0], after=0.0, normal=10.0, until=30.0) is None

    def test_immediate_when_the_fault_cost_nothing(self) -> None:
        times = [i / 10 for i in range(400)]
        assert recovery_seconds(times, after=10.0, normal=10.0, until=40.0) == 5.0


class TestDivergent:
    def test_same_signature_everywhere_is_fine(self) -> None:
        sigs = {"a": [("succeeded", ("k1",)), ("succeeded", ("k1",))], "b": [("failed", ())]}
        assert divergent(sigs) == {}

    def test_different_images_or_status_diverge(self) -> None:
        sigs = {"a": [("succeeded", ("k1",)), ("succeeded", ("k2",))],
                "b": [("failed", ()), ("succeeded", ("k3",))], "c": [("succeeded", ("k4",))]}
        assert set(divergent(sigs)) == {"a", "b"}
        assert set(divergent(sigs, ids={"b", "c"})) == {"b"}


def test_figures_are_saved_as_one_json_row(tmp_path: Path) -> None:
    fig = Figures(scenario="kill-9", scale=1.0, workers=3, sent=10, answered=10,
                  dlq={"generation_failed": 1})
    row = json.loads(fig.save(tmp_path).read_text())
    assert row["scenario"] == "kill-9" and row["dlq"] == {"generation_failed": 1}
    assert row["measured_at"].endswith("Z")
