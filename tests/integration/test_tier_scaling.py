"""Tier-aware scaling with the real operator, Kafka and API server (issue 15): a relax backlog
grows warm but leaves the cold (spot) pool asleep until its oldest request has waited half its
maxWaitSeconds; then cold wakes, and the Scaled Event says why. No workers consume (the pods
run on KWOK nodes only), so the backlog stays and only time moves."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.conftest import Kubectl, OperatorProcess, StackEnv, wait_for
from tests.integration.test_operator import ROOT, gpu_pool, produce, status

# relax promises 20 s: cold may wake from 10 s on.
TIERS = """  queue:
    partitions: 4
    tiers:
    - {name: turbo, weight: 10, maxWaitSeconds: 10}
    - {name: relax, weight: 1, maxWaitSeconds: 20, wakeCold: NearMaxWait}
"""


@pytest.fixture
def pool_ns(kubectl: Kubectl, operator: OperatorProcess, k8s_namespace: str) -> str:
    kubectl("apply", "-n", k8s_namespace, "-f", str(ROOT / "manifests/examples/tiny-model.yaml"))
    return k8s_namespace


async def test_relax_backlog_wakes_cold_only_near_its_max_wait(
        kubectl: Kubectl, stack: StackEnv, pool_ns: str) -> None:
    ns, pool = pool_ns, "tiers"
    manifest = gpu_pool(pool).replace("  queue: {partitions: 4}\n", TIERS)
    assert "wakeCold" in manifest
    kubectl("apply", "-n", ns, "-f", "-", input=manifest)
    wait_for(lambda: status(kubectl, ns, pool).get("ready") == "1/1", 30, "READY 1/1")

    await produce(stack, f"imagegen.{ns}.{pool}.relax", 10)
    produced = time.monotonic()
    wait_for(lambda: status(kubectl, ns, pool).get("warm", {}).get("desired") == 2, 30,
             "warm to grow for the relax backlog")
    # While relax is young: warm at its maximum, cold asleep, the reason says why.
    young = status(kubectl, ns, pool)
    assert time.monotonic() - produced < 10, "too slow to observe the young backlog"
    assert young["cold"]["desired"] == 0, young
    assert "relax 10 waits for warm" in young["lastScaleReason"], young["lastScaleReason"]

    # Once the oldest relax request is 10 s old, cold wakes (capped at 4 partitions: 2 + 2).
    wait_for(lambda: status(kubectl, ns, pool).get("cold", {}).get("desired") == 2, 60,
             "cold to wake near relax's max wait")
    assert time.monotonic() - produced >= 9  # never before half the promise (1 s of polling)
    st = status(kubectl, ns, pool)
    assert st["queue"]["oldestSecondsByTier"]["relax"] >= 10, st["queue"]
    events = kubectl("get", "events", "-n", ns, "--field-selector",
                     f"involvedObject.name={pool},reason=Scaled", "-o", "json").stdout
    messages = [e["message"] for e in json.loads(events)["items"]]
    assert any("cold 0→2" in m for m in messages), messages
    assert any("waits for warm" in m for m in messages), messages
