"""The operator on the real control plane: manifests in, children and truthful status out.

The pool here has no local-runner label, so KWOK marks its GPU pods Running and Ready at once:
this file is about reconciling, placement and status; tests/e2e runs real workers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import (
    Kubectl,
    OperatorProcess,
    StackEnv,
    unique,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]


def gpu_pool(name: str, model: str = "tiny-sdxl", extra: str = "") -> str:
    return f"""
apiVersion: imagegen.dev/v1alpha1
kind: GenerationPool
metadata: {{name: {name}}}
spec:
  models: [{model}]
  warm: {{minReplicas: 1, maxReplicas: 2}}
  cold: {{maxReplicas: 2, activationLag: 1}}
  queue: {{partitions: 4}}
  autoscaling: {{pollSeconds: 1, targetLagPerWorker: 1, scaleDownStabilizationSeconds: 5}}
{extra}
"""


def get(kubectl: Kubectl, ns: str, *args: str) -> Any:
    return json.loads(kubectl("get", "-n", ns, *args, "-o", "json").stdout)


def status(kubectl: Kubectl, ns: str, pool: str) -> dict[str, Any]:
    return dict(get(kubectl, ns, "gp", pool).get("status") or {})


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in st.get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


@pytest.fixture
def model_ns(kubectl: Kubectl, operator: OperatorProcess, k8s_namespace: str) -> str:
    kubectl("apply", "-n", k8s_namespace, "-f", str(ROOT / "manifests/examples/tiny-model.yaml"))
    return k8s_namespace


async def produce(stack: StackEnv, topic: str, count: int, partitions: int = 4) -> None:
    """`count` messages spread evenly over the partitions (no key skew: the policy caps the
    workers at the partitions that hold a backlog)."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(topic, json.dumps({"request_id": f"r{i}",
                                                            "prompt": "x"}).encode(),
                                         key=f"r{i}".encode(), partition=i % partitions)
    finally:
        await producer.stop()


async def commit_to_end(stack: StackEnv, group: str, topics: list[str]) -> None:
    """Commit the group's offsets at the end of every partition, as if workers had consumed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in topics
                 for p in (consumer.partitions_for_topic(t) or set())]
        if not parts:
            await consumer._client.force_metadata_update()
            parts = [TopicPartition(t, p) for t in topics
                     for p in (consumer.partitions_for_topic(t) or set())]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.commit({tp: off for tp, off in ends.items()})
    finally:
        await consumer.stop()


async def test_pool_children_placement_status_and_scaling(
        kubectl: Kubectl, stack: StackEnv, model_ns: str) -> None:
    ns, pool = model_ns, "gpu"
    kubectl("apply", "-n", ns, "-f", "-", input=gpu_pool(pool))

    def children() -> bool:
        names = {f"{o['kind']}/{o['metadata']['name']}" for o in get(
            kubectl, ns, "deploy,cm,svc,pdb", "-l", f"imagegen.dev/pool={pool}")["items"]}
        return {"Deployment/gpu-warm", "Deployment/gpu-cold", "ConfigMap/gpu-worker-config",
                "Service/gpu-metrics", "PodDisruptionBudget/gpu-warm"} <= names
    wait_for(children, 30, "the pool's children")
    wait_for(lambda: status(kubectl, ns, pool).get("ready") == "1/1", 30, "READY 1/1")

    # A backlog with no consumer: warm goes to its maximum, cold wakes on spot nodes,
    # capped at 4 partitions in total.
    await produce(stack, f"imagegen.{ns}.{pool}.turbo", 10)
    wait_for(lambda: status(kubectl, ns, pool).get("ready") == "4/4", 60, "READY 4/4")
    st = status(kubectl, ns, pool)
    assert st["warm"] == {"desired": 2, "replicas": 2, "ready": 2}
    assert st["cold"] == {"desired": 2, "replicas": 2, "ready": 2}
    assert st["queue"]["lag"] == 10 and st["queue"]["lagByTier"]["turbo"] == 10
    assert "capped at 4 partitions" in st["lastScaleReason"]
    assert condition(st, "QueueMetricsAvailable")["status"] == "True"
    assert condition(st, "Ready")["observedGeneration"] == st["observedGeneration"]

    pods = get(kubectl, ns, "pods", "-l", f"imagegen.dev/pool={pool}")["items"]
    nodes = {p["metadata"]["labels"]["imagegen.dev/role"] + ":" + p["spec"]["nodeName"]
             for p in pods}
    assert all(n.split(":")[1].startswith("gpu-ondemand-") for n in nodes if n[:5] == "warm:")
    assert all(n.split(":")[1].startswith("gpu-spot-") for n in nodes if n[:5] == "cold:")
    assert any(n.startswith("cold:") for n in nodes)

    columns = kubectl("get", "gp", pool, "-n", ns, "-o", "wide").stdout
    header, row = columns.splitlines()[:2]
    assert header.split()[:6] == ["NAME", "MODEL", "READY", "WARM", "COLD", "QUEUE"]
    assert row.split()[:6] == [pool, "tiny-sdxl", "4/4", "2", "2", "10"]
    events = kubectl("get", "events", "-n", ns, "--field-selector",
                     f"involvedObject.name={pool},reason=Scaled").stdout
    assert "warm 1→2" in events

    # The backlog is consumed (offsets committed to the end): after the 5 s down window the pool
    # returns to warm 1 / cold 0, and the pods were ranked for removal before the scale-down.
    await commit_to_end(stack, f"imagegen.{ns}.{pool}", [f"imagegen.{ns}.{pool}.{t}"
                                                        for t in ("turbo", "fast", "relax")])
    wait_for(lambda: status(kubectl, ns, pool).get("ready") == "1/1"
             and status(kubectl, ns, pool)["cold"]["replicas"] == 0, 60, "scale back to 1/1")
    left = get(kubectl, ns, "pods", "-l", f"imagegen.dev/pool={pool}")["items"]
    costs = {p["metadata"].get("annotations", {}).get("controller.kubernetes.io/pod-deletion-cost")
             for p in left if not p["metadata"].get("deletionTimestamp")}
    assert costs == {"0"}, costs  # ranked: ready and idle (no heartbeats: nothing in flight)


def test_manual_edits_are_reverted(kubectl: Kubectl, model_ns: str) -> None:
    ns, pool = model_ns, "edits"
    kubectl("apply", "-n", ns, "-f", "-", input=gpu_pool(pool))
    wait_for(lambda: status(kubectl, ns, pool).get("ready") == "1/1", 30, "READY 1/1")
    kubectl("scale", "deploy", f"{pool}-warm", "-n", ns, "--replicas=0")
    kubectl("patch", "cm", f"{pool}-worker-config", "-n", ns, "--type=merge",
            "-p", '{"data": {"worker.json": "{}"}}')

    def restored() -> bool:
        dep = get(kubectl, ns, "deploy", f"{pool}-warm")
        cm = get(kubectl, ns, "cm", f"{pool}-worker-config")
        return dep["spec"]["replicas"] == 1 and json.loads(cm["data"]["worker.json"]).get("pool") \
            == pool
    wait_for(restored, 40, "the operator to revert the manual edits")


def test_restart_creates_no_duplicates_and_delete_cascades(
        kubectl: Kubectl, operator: OperatorProcess, model_ns: str) -> None:
    ns, pool = model_ns, "restart"
    kubectl("apply", "-n", ns, "-f", "-", input=gpu_pool(pool))
    wait_for(lambda: status(kubectl, ns, pool).get("ready") == "1/1", 30, "READY 1/1")
    before = get(kubectl, ns, "rs,deploy,cm", "-l", f"imagegen.dev/pool={pool}")["items"]
    operator.restart()
    time.sleep(4)  # a few passes of the restarted operator
    after = get(kubectl, ns, "rs,deploy,cm", "-l", f"imagegen.dev/pool={pool}")["items"]
    assert sorted(o["metadata"]["uid"] for o in after) == sorted(
        o["metadata"]["uid"] for o in before)
    assert status(kubectl, ns, pool)["warm"]["replicas"] == 1

    kubectl("delete", "gp", pool, "-n", ns, "--wait=true", timeout=60)
    wait_for(lambda: not get(kubectl, ns, "deploy,cm,svc,pdb", "-l",
                             f"imagegen.dev/pool={pool}")["items"], 60,
             "garbage collection of the pool's children")


def test_missing_model_and_unreachable_kafka_are_reported(
        kubectl: Kubectl, model_ns: str) -> None:
    ns = model_ns
    kubectl("apply", "-n", ns, "-f", "-", input=gpu_pool("nomodel", model="no-such-model"))
    kubectl("apply", "-n", ns, "-f", "-", input=gpu_pool(
        "nokafka", extra="  queue: {partitions: 4, bootstrapServers: '127.0.0.1:1'}"
    ).replace("  queue: {partitions: 4}\n", ""))

    def reported() -> bool:
        a, b = status(kubectl, ns, "nomodel"), status(kubectl, ns, "nokafka")
        return ("no-such-model" in condition(a, "Degraded").get("message", "")
                and condition(b, "QueueMetricsAvailable").get("status") == "False")
    wait_for(reported, 40, "Degraded / QueueMetricsAvailable=False conditions")
    a = status(kubectl, ns, "nomodel")
    assert condition(a, "Ready")["status"] == "False"
    b = status(kubectl, ns, "nokafka")
    assert "127.0.0.1:1" in condition(b, "Degraded")["message"]
    # Metrics missing: replicas held at the warm minimum, never scaled to zero.
    assert b["warm"]["desired"] == 1
    assert condition(b, "Scaling")["reason"] == "HoldingOnMissingMetrics"


def test_model_deletion_waits_for_pools(kubectl: Kubectl, model_ns: str) -> None:
    ns, pool = model_ns, "user"
    kubectl("apply", "-n", ns, "-f", "-", input=gpu_pool(pool))
    wait_for(lambda: get(kubectl, ns, "im", "tiny-sdxl").get("status", {}).get("usedBy")
             == [pool], 30, "usedBy")
    kubectl("delete", "im", "tiny-sdxl", "-n", ns, "--wait=false")

    def blocked() -> bool:
        st = get(kubectl, ns, "im", "tiny-sdxl").get("status") or {}
        return condition(st, "InUse").get("reason") == "DeletionBlocked"
    wait_for(blocked, 30, "InUse=DeletionBlocked")
    assert pool in condition(get(kubectl, ns, "im", "tiny-sdxl")["status"], "InUse")["message"]
    kubectl("delete", "gp", pool, "-n", ns)
    wait_for(lambda: kubectl("get", "im", "tiny-sdxl", "-n", ns, check=False).returncode != 0,
             40, "the model's deletion once no pool uses it")


def test_operator_metrics(kubectl: Kubectl, operator: OperatorProcess, model_ns: str) -> None:
    ns = model_ns
    kubectl("apply", "-n", ns, "-f", "-", input=gpu_pool("metrics"))
    wait_for(lambda: status(kubectl, ns, "metrics").get("ready") == "1/1", 30, "READY 1/1")
    def scraped() -> str:
        text = operator.metrics()
        return text if 'pool="metrics"' in text else ""
    text = wait_for(scraped, 20, "per-pool gauges")
    assert 'imagegen_operator_reconciles_total{kind="GenerationPool",result="ok"}' in str(text)
    assert f'imagegen_pool_desired_replicas{{namespace="{ns}",pool="metrics",role="warm"}} 1.0' \
        in str(text)


def test_unique_helper_is_random() -> None:
    assert unique("a") != unique("a")


def test_pending_pods_waiting_for_gpus_are_not_failures(kubectl: Kubectl, model_ns: str) -> None:
    """Workers asking for more GPUs than any node has stay Pending: the pool says it waits for
    capacity (as while a cluster autoscaler adds nodes), is not Degraded, keeps its replicas."""
    ns, pool = model_ns, "big"
    kubectl("apply", "-n", ns, "-f", "-", input=gpu_pool(pool, extra="  gpu: {count: 16}"))

    def waiting() -> dict[str, Any]:
        st = status(kubectl, ns, pool)
        return st if "Pending for a node" in condition(st, "Ready").get("message", "") else {}
    st = wait_for(waiting, 40, "Ready=False naming the Pending pods")
    assert isinstance(st, dict)
    assert condition(st, "Ready")["reason"] == "WaitingForWorkers"
    assert condition(st, "Degraded")["status"] == "False"
    assert st["warm"]["desired"] == 1


async def test_stalled_partitions_are_reported(kubectl: Kubectl, stack: StackEnv,
                                               model_ns: str) -> None:
    """Ready workers, a backlog, committed offsets that never move (KWOK pods do not consume:
    as a hung worker would): Degraded=PartitionStalled naming the partitions, and an Event."""
    ns, pool = model_ns, "stuck"
    # CPU-only workers: GPU capacity of the fake nodes is shared with every other test's pools.
    kubectl("apply", "-n", ns, "-f", "-", input=gpu_pool(
        pool, extra="  gpu: {count: 0}\n  resources: {cpu: 100m, memory: 64Mi}"))
    wait_for(lambda: status(kubectl, ns, pool).get("ready") == "1/1", 30, "READY 1/1")
    # turbo: maxWaitSeconds 10, so its threshold is max(8 s, 1.5 x 10 s) = 15 s.
    await produce(stack, f"imagegen.{ns}.{pool}.turbo", 2, partitions=2)

    def degraded() -> dict[str, Any]:
        st = status(kubectl, ns, pool)
        if condition(st, "Degraded").get("reason") != "PartitionStalled":
            raise AssertionError(f"Degraded={condition(st, 'Degraded')}, ready={st.get('ready')}, "
                                 f"queue={st.get('queue')}")
        return st
    st = wait_for(degraded, 90, "Degraded=PartitionStalled")
    assert isinstance(st, dict)
    stalled = st["queue"]["stalledPartitions"]
    assert sorted(line.split(" ")[0] for line in stalled) == [
        f"imagegen.{ns}.{pool}.turbo:0", f"imagegen.{ns}.{pool}.turbo:1"]
    assert condition(st, "Ready")["status"] == "True"  # serving, but not progressing here
    events = kubectl("get", "events", "-n", ns, "--field-selector",
                     f"involvedObject.name={pool},reason=PartitionStalled").stdout
    assert "not moving while workers are ready" in events
