"""Benchmark (not a test): autoscaler reaction time on the local stack (issue #5).

Reaction time = from the moment the queue lag crosses the scaling threshold (t0: the produce of
the burst is acknowledged by Kafka, acks=all) to the moment the warm Deployment's spec.replicas
is seen changed through the Kubernetes API (t1, polled every 50 ms). Goal: <= pollSeconds + 1 s.

Setup: the real operator as a local process (watching only this script's namespace), a fresh
namespace with the tiny model, and one pool per pollSeconds setting WITHOUT the local-runner
label: KWOK marks the GPU pods ready at once and nothing consumes, so the lag stays until the
script resets it. Pool: warm 1..4, cold 0..2 (activationLag 1), 4 partitions,
targetLagPerWorker 1, scale-up window 0 s, scale-down window 2 s.

Each trial: sleep a random fraction of the poll interval (so t0 falls anywhere in the operator's
poll cycle), produce one request to each of the 4 turbo partitions (lag 0 -> 4), time the warm
Deployment going 1 -> 4, then reset: commit the consumer group at the end offsets (lag -> 0) and
wait for warm to come back to 1.

Baseline, same run: the API floor of this measurement. A plain Deployment the operator does not
manage is scaled (a) with `kubectl scale` (a new kubectl process, as a person would) and (b) with
one PATCH of the scale subresource from this process; t1 is observed by the same 50 ms poller.

Usage: .venv/bin/python bench/reaction_time.py [--trials 5] [--polls 1,5] [--json]
       [--use-running-operator]
The stack comes from `dev/stack up` (reused when running) and `dev/stack env --json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from imagegen_api import naming  # noqa: E402
from kubernetes_asyncio import client as k8s  # noqa: E402
from kubernetes_asyncio import config as k8s_config  # noqa: E402

from bench.drain_scenario import pool_manifest  # noqa: E402
from tests.integration.conftest import (  # noqa: E402
    OperatorProcess,
    StackDown,
    StackEnv,
    apply_crds,
    kubectl_runner,
    start_stack,
    wait_for,
)

PARTITIONS = 4
WARM_MAX = 4
POLL_EVERY = 0.05


# --------------------------------------------------------------------------- stack helpers
# (also used by bench/drain_curve.py)


def stack_env() -> StackEnv:
    """Start or reuse the local stack and describe it (the tests' `stack` fixture does the same)."""
    try:
        return start_stack()
    except StackDown as err:
        raise SystemExit(str(err)) from err


def kubectl(stack: StackEnv, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return kubectl_runner(stack)(*args, input=input, check=check, timeout=timeout)


def kubectl_json(stack: StackEnv, *args: str) -> dict[str, Any]:
    proc = kubectl(stack, *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout else {}


def prepare_namespace(stack: StackEnv, prefix: str) -> str:
    """A new namespace with the S3 credentials Secret and the tiny model (as tests/e2e)."""
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl(stack, "create", "namespace", ns)
    kubectl(stack, "create", "secret", "generic", "imagegen-s3", "-n", ns,
            f"--from-literal=AWS_ACCESS_KEY_ID={stack.s3_access_key}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={stack.s3_secret_key}")
    kubectl(stack, "apply", "-n", ns, "-f", str(ROOT / "manifests/examples/tiny-model.yaml"))
    return ns


def other_operators() -> list[int]:
    """Pids of operator processes already running (they would also act on our pools unless
    they watch other namespaces only)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"imagegen_operator" in cmd and b"-m" in cmd:
            pids.append(int(d.name))
    return pids


def scaled_by(op: OperatorProcess | None, offset: int, namespace: str, pool: str) -> bool:
    """Did `op` log the scale of namespace/pool after byte `offset` of its log? (The operator
    logs "Scaled ns/pool: ..." only when it patched replicas itself.) True without an op."""
    if op is None:
        return True
    try:
        with open(op.log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return False
    return f"Scaled {namespace}/{pool}:" in text


def log_size(op: OperatorProcess | None) -> int:
    try:
        return 0 if op is None else op.log_path.stat().st_size
    except OSError:
        return 0


def start_operator(stack: StackEnv, namespace: str) -> OperatorProcess:
    """The real operator as a local process, watching `namespace` only."""
    op = OperatorProcess(stack, watch=namespace)
    op.start()
    return op


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# --------------------------------------------------------------------------- measurement


@dataclass
class Trial:
    t_s: float
    before: int
    after: int
    reason: str | None = None


@dataclass
class Setting:
    label: str
    poll_s: float | None
    trials: list[Trial] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [t.t_s for t in self.trials]

    def summary(self) -> dict[str, Any]:
        v = self.values
        goal = None if self.poll_s is None else self.poll_s + 1.0
        return {"setting": self.label, "n": len(v),
                "p50_s": round(statistics.median(v), 3) if v else None,
                "max_s": round(max(v), 3) if v else None,
                "min_s": round(min(v), 3) if v else None,
                "goal_s": goal, "meets_goal": None if goal is None or not v else max(v) <= goal}


async def wait_replicas_change(apps: k8s.AppsV1Api, namespace: str, name: str, before: int,
                               limit_s: float) -> tuple[float, int]:
    """Poll the Deployment every 50 ms; (monotonic time it was first seen changed, replicas)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        dep = await apps.read_namespaced_deployment(name, namespace)
        now = time.monotonic()
        replicas = int(dep.spec.replicas or 0)
        if replicas != before:
            return now, replicas
        await asyncio.sleep(POLL_EVERY)
    raise TimeoutError(f"deployment {namespace}/{name} stayed at {before} for {limit_s:.0f} s")


async def current_replicas(apps: k8s.AppsV1Api, namespace: str, name: str) -> int:
    dep = await apps.read_namespaced_deployment(name, namespace)
    return int(dep.spec.replicas or 0)


async def api_floor(stack: StackEnv, apps: k8s.AppsV1Api, namespace: str,
                    trials: int) -> tuple[Setting, Setting]:
    """Scale a plain Deployment with kubectl and with one direct PATCH; time until seen."""
    name = "api-floor"
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name},
           "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "c", "image": "pause"}]}}}}
    await asyncio.to_thread(kubectl, stack, "apply", "-n", namespace, "-f", "-",
                            input=json.dumps(dep))
    by_kubectl, by_patch = Setting("kubectl scale (API floor)", None), \
        Setting("direct PATCH (API floor)", None)
    for _ in range(trials):
        for setting in (by_kubectl, by_patch):
            before = await current_replicas(apps, namespace, name)
            target = 1 - before if before in (0, 1) else 0
            t0 = time.monotonic()
            if setting is by_kubectl:
                watch = asyncio.create_task(
                    wait_replicas_change(apps, namespace, name, before, 30))
                await asyncio.to_thread(kubectl, stack, "scale", "-n", namespace,
                                        f"deployment/{name}", f"--replicas={target}")
            else:
                watch = asyncio.create_task(
                    wait_replicas_change(apps, namespace, name, before, 30))
                await apps.patch_namespaced_deployment_scale(
                    name, namespace, {"spec": {"replicas": target}})
            t1, after = await watch
            setting.trials.append(Trial(round(t1 - t0, 3), before, after))
            await asyncio.sleep(0.3)
    return by_kubectl, by_patch


async def produce_burst(producer: AIOKafkaProducer, topic: str) -> None:
    """One request per partition; returns once every send is acknowledged (acks=all)."""
    from imagegen_api.messages import GenerationRequest

    futures = []
    for p in range(PARTITIONS):
        rid = f"react-{uuid.uuid4().hex[:10]}"
        req = GenerationRequest(request_id=rid, prompt="reaction", tier="turbo", width=64,
                                height=64, steps=2)
        futures.append(await producer.send(topic, req.to_bytes(), key=rid.encode(),
                                           partition=p))
    await asyncio.gather(*futures)


async def reset_lag(bootstrap: str, namespace: str, pool: str) -> None:
    """Commit the pool's consumer group at the end of every tier topic: lag -> 0."""
    tps = [TopicPartition(naming.tier_topic(namespace, pool, tier), p)
           for tier in naming.DEFAULT_TIERS for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap,
                                group_id=naming.consumer_group(namespace, pool),
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: off for tp, off in ends.items()})
    finally:
        await consumer.stop()


def pool_status(stack: StackEnv, namespace: str, pool: str) -> dict[str, Any]:
    status: dict[str, Any] = kubectl_json(stack, "get", "gp", pool, "-n", namespace).get(
        "status", {})
    return status


async def measure_pool(stack: StackEnv, apps: k8s.AppsV1Api, namespace: str, poll: int,
                       trials: int, op: OperatorProcess | None) -> Setting:
    pool = f"react-p{poll}"
    manifest = pool_manifest(pool, "tiny-sdxl", warm_min=1, warm_max=WARM_MAX, cold_max=2,
                             partitions=PARTITIONS, activation_lag=1, down_window=2, poll=poll)
    manifest["spec"]["worker"].pop("podLabels", None)  # no local runner: KWOK pods, no consumers
    manifest["spec"]["autoscaling"]["targetLagPerWorker"] = 1
    await asyncio.to_thread(kubectl, stack, "apply", "-n", namespace, "-f", "-",
                            input=json.dumps(manifest))
    warm = naming.deployment_name(pool, naming.ROLE_WARM)

    def ready_at_rest() -> bool:
        st = pool_status(stack, namespace, pool)
        dep = kubectl_json(stack, "get", "deployment", warm, "-n", namespace)
        return (st.get("queue", {}).get("lag") == 0
                and dep.get("spec", {}).get("replicas") == 1)

    await asyncio.to_thread(wait_for, ready_at_rest, 120, f"pool {pool} at rest")
    topic = naming.tier_topic(namespace, pool, "turbo")
    setting = Setting(f"pollSeconds={poll}", float(poll))
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all",
                                linger_ms=0)
    await producer.start()
    try:
        attempts = 0
        while len(setting.trials) < trials and attempts < 3 * trials:
            attempts += 1
            # Another cluster-wide operator (e.g. one left by `make demo`) also scales this pool
            # and would shorten the figure: keep only trials whose scale our operator made.
            offset = log_size(op)
            await asyncio.sleep(random.uniform(0, poll))  # land anywhere in the poll cycle
            before = await current_replicas(apps, namespace, warm)
            await produce_burst(producer, topic)
            t0 = time.monotonic()
            t1, after = await wait_replicas_change(apps, namespace, warm, before, poll + 60)
            await asyncio.sleep(1.0)  # let the operator write its log line
            clean = scaled_by(op, offset, namespace, pool)
            reason = pool_status(stack, namespace, pool).get("lastScaleReason")
            trial = Trial(round(t1 - t0, 3), before, after, reason)
            if clean:
                setting.trials.append(trial)
            print(f"  pollSeconds={poll} trial {len(setting.trials)}: {trial.t_s:.3f} s "
                  f"(warm {before}->{after}) {reason or ''}"
                  f"{'' if clean else ' [discarded: another operator scaled first]'}",
                  flush=True)
            await reset_lag(stack.kafka_bootstrap, namespace, pool)
            await asyncio.to_thread(wait_for, ready_at_rest, 90, f"pool {pool} back at rest")
    finally:
        await producer.stop()
    await asyncio.to_thread(kubectl, stack, "delete", "gp", pool, "-n", namespace,
                            "--wait=false")
    return setting


async def main_async(args: argparse.Namespace) -> list[Setting]:
    stack = stack_env()
    apply_crds(kubectl_runner(stack))
    others = other_operators()
    ns = prepare_namespace(stack, "bench-react")
    op: OperatorProcess | None = None
    if not args.use_running_operator:
        if others:
            print(f"note: other operator processes are running (pids {others}); trials whose "
                  "scale our operator did not make are discarded", file=sys.stderr)
        op = start_operator(stack, ns)
    await k8s_config.load_kube_config(config_file=stack.kubeconfig)
    settings: list[Setting] = []
    try:
        async with k8s.ApiClient() as api:
            apps = k8s.AppsV1Api(api)
            print("baseline: API floor", flush=True)
            settings.extend(await api_floor(stack, apps, ns, args.trials))
            for poll in args.polls:
                print(f"pollSeconds={poll}", flush=True)
                settings.append(await measure_pool(stack, apps, ns, poll, args.trials, op))
    finally:
        if op is not None:
            op.stop()
        kubectl(stack, "delete", "namespace", ns, "--wait=false", check=False)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--polls", default="1,5", help="comma-separated pollSeconds values")
    parser.add_argument("--use-running-operator", action="store_true",
                        help="do not start an operator (one must watch the new namespace)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.polls = [int(p) for p in args.polls.split(",") if p.strip()]
    settings = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps([{**s.summary(), "trials": [asdict(t) for t in s.trials]}
                          for s in settings], indent=2))
        return
    print()
    print(f"{'setting':28} {'n':>2} {'p50 s':>7} {'max s':>7} {'min s':>7}  goal")
    for s in settings:
        m = s.summary()
        goal = ("-" if m["goal_s"] is None else
                f"<= {m['goal_s']:.0f} s: {'met' if m['meets_goal'] else 'MISSED'}")
        cells = " ".join("      -" if m[k] is None else f"{m[k]:>7.3f}"
                         for k in ("p50_s", "max_s", "min_s"))
        print(f"{s.label:28} {m['n']:>2} {cells}  {goal}")


if __name__ == "__main__":
    main()
