"""The autoscaling scenario of issue #5, shared by the e2e test and the drain-curve benchmark.

A burst of requests lands on a pool whose worker pods the local pod runner turns into real
worker processes. While the pool works, the pool's two Deployments and its CR status are sampled
once a second: lag, warm and cold replicas (desired and ready), answers received. The caller
asserts on the samples (e2e) or prints and plots them (benchmark).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from imagegen_api import naming
from imagegen_api.messages import GenerationRequest, GenerationResult

# The dev stack's pod runner (dev/podrunner.py) runs pods with this label as local processes.
LOCAL_RUNNER_LABEL = "imagegen.dev/local-runner"


@dataclass(frozen=True)
class Sample:
    t: float
    lag: int | None
    warm_replicas: int
    warm_ready: int
    cold_replicas: int
    cold_ready: int
    answered: int
    reason: str | None


@dataclass
class DrainRun:
    samples: list[Sample] = field(default_factory=list)
    results: dict[str, GenerationResult] = field(default_factory=dict)
    duplicates: int = 0
    submitted: int = 0
    all_answered_at: float | None = None

    def as_rows(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.samples]


def pool_manifest(name: str, model: str, *, warm_min: int = 1, warm_max: int = 2,
                  cold_max: int = 2, partitions: int = 4, activation_lag: int = 3,
                  down_window: int = 15, poll: int = 2, batch: int = 2) -> dict[str, Any]:
    """A small pool for the scenario: short windows so the whole cycle fits in minutes."""
    return {
        "apiVersion": naming.API_VERSION,
        "kind": naming.GENERATIONPOOL_KIND,
        "metadata": {"name": name},
        "spec": {
            "models": [model],
            "resources": {"cpu": "1", "memory": "1Gi"},
            "warm": {"minReplicas": warm_min, "maxReplicas": warm_max},
            "cold": {"maxReplicas": cold_max, "activationLag": activation_lag},
            "queue": {"partitions": partitions},
            "autoscaling": {"pollSeconds": poll, "targetLagPerWorker": 2,
                            "scaleUpStabilizationSeconds": 0,
                            "scaleDownStabilizationSeconds": down_window},
            "batching": {"maxBatchSize": batch, "maxWaitMs": 20},
            "worker": {"terminationGracePeriodSeconds": 20, "heartbeatSeconds": 1,
                       # dev/podrunner.py runs these pods as local worker processes.
                       "podLabels": {LOCAL_RUNNER_LABEL: "true"}},
        },
    }


def _kubectl_json(kubectl: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([kubectl, *args, "-o", "json"], capture_output=True, text=True,
                          check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout else {}


def observe(kubectl: str, namespace: str, pool: str) -> tuple[int, int, int, int, int | None,
                                                             str | None]:
    """(warm replicas, warm ready, cold replicas, cold ready, lag, last scale reason)."""
    out = []
    for role in naming.ROLES:
        dep = _kubectl_json(kubectl, "get", "deployment", naming.deployment_name(pool, role),
                            "-n", namespace)
        out.append(int(dep.get("spec", {}).get("replicas", 0) or 0))
        out.append(int(dep.get("status", {}).get("readyReplicas", 0) or 0))
    status = _kubectl_json(kubectl, "get", "gp", pool, "-n", namespace).get("status", {})
    lag = status.get("queue", {}).get("lag")
    return out[0], out[1], out[2], out[3], lag, status.get("lastScaleReason")


async def run(*, kubectl: str, bootstrap: str, namespace: str, pool: str, count: int,
              steps: int = 6, settle_warm: int = 1, limit_s: float = 420.0,
              sample_every: float = 1.0) -> DrainRun:
    """Submit `count` requests at once, sample until all are answered and the pool is back at
    `settle_warm` warm and 0 cold replicas (or limit_s passes)."""
    from imagegen_client import ImagegenClient, new_request_id

    tiers = naming.DEFAULT_TIERS
    run_ = DrainRun(submitted=count)
    # Run-unique prompts: the Redis cache outlives runs, and the scenario needs real work.
    run_tag = uuid.uuid4().hex[:8]
    requests = [
        GenerationRequest(request_id=new_request_id(f"drain-{tiers[i % 3]}"),
                          prompt=f"scenario prompt {i} {run_tag}", seed=i, tier=tiers[i % 3],
                          width=64, height=64, steps=steps)
        for i in range(count)
    ]
    async with ImagegenClient(bootstrap, namespace, pool) as client:
        start = time.monotonic()
        ids = await client.submit(requests)
        deadline = start + limit_s
        while time.monotonic() < deadline:
            warm, warm_ready, cold, cold_ready, lag, reason = await asyncio.to_thread(
                observe, kubectl, namespace, pool)
            answered = sum(1 for i in ids if i in client.results)
            now = time.monotonic() - start
            run_.samples.append(Sample(round(now, 1), lag, warm, warm_ready, cold, cold_ready,
                                       answered, reason))
            if answered == count and run_.all_answered_at is None:
                run_.all_answered_at = now
            if run_.all_answered_at is not None and warm == settle_warm and cold == 0:
                break
            await asyncio.sleep(sample_every)
        run_.results = {i: client.results[i] for i in ids if i in client.results}
        run_.duplicates = sum(client.duplicates.values())
    return run_
