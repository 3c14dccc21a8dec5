"""The operator under chaos: the active operator killed (SIGKILL) in the middle of a burst, on
the real control plane with real worker pods (the local pod runner). A new operator process
starts in its place, as the Deployment would restart it; the burst is answered in full, and the
new operator brings the pool back to its minimum after the down window."""

from __future__ import annotations

import asyncio
import json
import time

from bench.drain_scenario import pool_manifest, run
from tests.chaos.figures import Figures
from tests.integration.conftest import Kubectl, OperatorProcess, StackEnv, wait_for

BURST = 48


async def test_operator_killed_during_a_burst(kubectl: Kubectl, stack: StackEnv,
                                              operator: OperatorProcess,
                                              worker_ns: str) -> None:
    ns, pool = worker_ns, "opkill"
    manifest = pool_manifest(pool, "tiny-sdxl", warm_min=1, warm_max=2, cold_max=2,
                             partitions=4, activation_lag=3, down_window=15, poll=2)
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: json.loads(kubectl("get", "gp", pool, "-n", ns, "-o", "json").stdout)
             .get("status", {}).get("warm", {}).get("ready") == 1, 120,
             "the first warm worker to load the model")
    started = time.monotonic()
    burst = asyncio.create_task(run(kubectl=stack.kubectl_bin, bootstrap=stack.kafka_bootstrap,
                                    namespace=ns, pool=pool, count=BURST, steps=12,
                                    settle_warm=1, limit_s=420))
    killed_at = 0.0
    try:
        # Kill the operator once it has scaled the pool up for the burst.
        await asyncio.to_thread(
            wait_for, lambda: burst.done() or int(json.loads(kubectl(
                "get", "deploy", f"{pool}-warm", "-n", ns, "-o", "json").stdout)
                ["spec"]["replicas"]) > 1, 120, "the operator to scale up for the burst")
        assert operator.proc is not None
        operator.proc.kill()
        operator.proc.wait()
        killed_at = time.monotonic() - started
        await asyncio.sleep(5)  # a crash-looping pod's restart delay
    finally:
        await asyncio.to_thread(operator.start)  # the session's operator, back either way
    drained = await burst
    timeline = "\n".join(f"{s.t:6.1f}s lag={s.lag} warm={s.warm_replicas}/{s.warm_ready} "
                         f"cold={s.cold_replicas}/{s.cold_ready} answered={s.answered}"
                         for s in drained.samples)
    last = drained.samples[-1]
    Figures(scenario="operator-killed", scale=1.0, workers=4, sent=BURST,
            answered=len(drained.results), lost=BURST - len(drained.results),
            duplicate_messages=drained.duplicates,
            statuses={s: sum(1 for r in drained.results.values() if r.status == s)
                      for s in {r.status for r in drained.results.values()}},
            fault_s=5.0, recovery_s=(round(drained.all_answered_at - killed_at, 1)
                                     if drained.all_answered_at else None),
            wall_s=round(time.monotonic() - started, 1)).save()
    assert killed_at > 0, timeline
    assert len(drained.results) == BURST, timeline
    assert {r.status for r in drained.results.values()} == {"succeeded"}, timeline
    # The new operator finished the job: back to warm 1, cold 0 after the down window.
    assert last.warm_replicas == 1 and last.cold_replicas == 0, timeline
