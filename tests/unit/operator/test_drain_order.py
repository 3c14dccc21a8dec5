"""Scale-down order: not-ready pods first, then idle workers, busy workers last."""

from __future__ import annotations

import pytest
from imagegen_operator.scaling.drain_order import (
    BUSY,
    IDLE,
    NOT_READY,
    WorkerPod,
    deletion_costs,
)


@pytest.mark.parametrize(("pods", "in_flight", "expected"), [
    ([WorkerPod("a", True, None)], {}, {"a": IDLE}),
    ([WorkerPod("a", True, None)], {"a": 3}, {"a": BUSY + 3}),
    ([WorkerPod("a", False, None)], {"a": 3}, {"a": NOT_READY}),
    # Unchanged annotations are not patched again.
    ([WorkerPod("a", True, "0"), WorkerPod("b", True, "0")], {"b": 1}, {"b": BUSY + 1}),
    ([], {"x": 2}, {}),
])
def test_costs(pods: list[WorkerPod], in_flight: dict[str, int],
               expected: dict[str, int]) -> None:
    assert deletion_costs(pods, in_flight) == expected


def test_order_busiest_last() -> None:
    pods = [WorkerPod(n, ready, None) for n, ready in
            (("busy2", True), ("idle", True), ("loading", False), ("busy1", True))]
    costs = deletion_costs(pods, {"busy1": 1, "busy2": 2})
    assert sorted(costs, key=costs.__getitem__) == ["loading", "idle", "busy1", "busy2"]
