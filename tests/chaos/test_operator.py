"""The operator under chaos: two replicas electing a leader through a Lease (as the chart runs
them), the active one killed (SIGKILL: no release) in the middle of a burst on the real control
plane with real worker pods (the local pod runner). The standby takes over once the Lease
expires; the burst is answered in full and the pool comes back to its minimum after the down
window."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator

import pytest

from bench.drain_scenario import pool_manifest, run
from tests.chaos.figures import Figures
from tests.integration.conftest import (
    ROOT,
    Kubectl,
    OperatorProcess,
    StackEnv,
    unique,
    wait_for,
)

BURST = 48
LEASE = "imagegen-chaos"
# Short Lease timings (the defaults' ratios, 15/10/2) so a takeover fits the burst.
LEASE_ENV = {"IMAGEGEN_OPERATOR_STANDALONE": "0", "IMAGEGEN_LEASE_NAME": LEASE,
             "IMAGEGEN_LEASE_DURATION_SECONDS": "4",
             "IMAGEGEN_LEASE_RENEW_DEADLINE_SECONDS": "3",
             "IMAGEGEN_LEASE_RETRY_PERIOD_SECONDS": "1"}


@pytest.fixture
def chaos_ns(kubectl: Kubectl, stack: StackEnv, operator: OperatorProcess) -> Iterator[str]:
    """A namespace for real worker pods that the session's operator does not watch (it watches
    t-*; an operator a demo installed is paused by that fixture), so only the replicas of the
    test act on it."""
    ns = unique("chaos")
    kubectl("create", "namespace", ns)
    kubectl("create", "secret", "generic", "imagegen-s3", "-n", ns,
            f"--from-literal=AWS_ACCESS_KEY_ID={stack.s3_access_key}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={stack.s3_secret_key}")
    kubectl("apply", "-n", ns, "-f", str(ROOT / "manifests/examples/tiny-model.yaml"))
    yield ns
    for kind in ("generationpools.imagegen.dev", "imagemodels.imagegen.dev"):
        for name in kubectl("get", kind, "-n", ns, "-o", "name", check=False).stdout.split():
            kubectl("patch", name, "-n", ns, "--type=merge", "-p",
                    '{"metadata":{"finalizers":null}}', check=False)
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


def lease_holder(kubectl: Kubectl, ns: str) -> str:
    proc = kubectl("get", "lease", LEASE, "-n", ns, "-o", "json", check=False)
    return str(json.loads(proc.stdout)["spec"].get("holderIdentity") or "") \
        if proc.returncode == 0 else ""


async def test_active_operator_killed_during_a_burst(kubectl: Kubectl, stack: StackEnv,
                                                     chaos_ns: str) -> None:
    ns, pool = chaos_ns, "opkill"
    replicas = {name: OperatorProcess(stack, watch=ns, extra_env={
        **LEASE_ENV, "POD_NAME": name, "POD_NAMESPACE": ns}) for name in ("op-a", "op-b")}
    try:
        await asyncio.gather(*(asyncio.to_thread(r.start) for r in replicas.values()))
        first = str(wait_for(lambda: lease_holder(kubectl, ns), 60, "a replica to lead"))
        leader = next(r for n, r in replicas.items() if n in first)
        standby_name = next(n for n in replicas if n not in first)
        kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pool_manifest(
            pool, "tiny-sdxl", warm_min=1, warm_max=2, cold_max=2, partitions=4,
            activation_lag=3, down_window=15, poll=2)))
        wait_for(lambda: json.loads(kubectl("get", "gp", pool, "-n", ns, "-o", "json").stdout)
                 .get("status", {}).get("warm", {}).get("ready") == 1, 150,
                 "the first warm worker to load the model")
        started = time.monotonic()
        burst = asyncio.create_task(run(
            kubectl=stack.kubectl_bin, bootstrap=stack.kafka_bootstrap, namespace=ns,
            pool=pool, count=BURST, steps=12, settle_warm=1, limit_s=420))
        await asyncio.to_thread(
            wait_for, lambda: burst.done() or int(json.loads(kubectl(
                "get", "deploy", f"{pool}-warm", "-n", ns, "-o", "json").stdout)
                ["spec"]["replicas"]) > 1, 120, "the leader to scale up for the burst")
        assert leader.proc is not None
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait()
        killed_at = time.monotonic() - started
        taken = await asyncio.to_thread(
            wait_for, lambda: standby_name in lease_holder(kubectl, ns), 60,
            "the standby to take the Lease")
        took_over_s = round(time.monotonic() - started - killed_at, 1)
        drained = await burst
    finally:
        for r in replicas.values():
            await asyncio.to_thread(r.stop)
    timeline = "\n".join(f"{s.t:6.1f}s lag={s.lag} warm={s.warm_replicas}/{s.warm_ready} "
                         f"cold={s.cold_replicas}/{s.cold_ready} answered={s.answered}"
                         for s in drained.samples)
    last = drained.samples[-1]
    statuses = [r.status for r in drained.results.values()]
    Figures(scenario="operator-killed", scale=1.0, workers=4, sent=BURST,
            answered=len(drained.results), lost=BURST - len(drained.results),
            duplicate_messages=drained.duplicates,
            statuses={s: statuses.count(s) for s in set(statuses)}, fault_s=took_over_s,
            recovery_s=(round(drained.all_answered_at - killed_at, 1)
                        if drained.all_answered_at else None),
            wall_s=round(time.monotonic() - started, 1)).save()
    assert taken, timeline
    assert len(drained.results) == BURST, timeline
    assert set(statuses) == {"succeeded"}, timeline
    # The new leader finished the job: back to warm 1, cold 0 after the down window.
    assert last.warm_replicas == 1 and last.cold_replicas == 0, timeline
