"""The local stack is real: pods are scheduled by kube-scheduler onto KWOK GPU nodes, spot
taints hold, the pod runner turns a pod into a real process and stops it, Kafka keeps
consumer-group offsets whose lag we can read, Redis and MinIO answer."""

from __future__ import annotations

import json
import os
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .conftest import Kubectl, StackEnv, unique

pytestmark = pytest.mark.integration


def wait_for(predicate: Any, timeout: float = 60, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def apply(kubectl: Kubectl, manifest: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", input=json.dumps(manifest))


def pod(name: str, **spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", {})
    container = {"name": "main", "image": "example.invalid/none:1", **spec.pop("container", {})}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [container], **spec},
    }


class TestScheduling:
    def test_gpu_deployment_is_scheduled_on_a_kwok_gpu_node_and_ready(
        self, kubectl: Kubectl, k8s_namespace: str
    ) -> None:
        apply(
            kubectl,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "gpu", "namespace": k8s_namespace},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "gpu"}},
                    "template": {
                        "metadata": {"labels": {"app": "gpu"}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "c",
                                    "image": "example.invalid/gpu:1",
                                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                                }
                            ]
                        },
                    },
                },
            },
        )
        wait_for(
            lambda: (
                get_json(kubectl, "deployment", "gpu", "-n", k8s_namespace)
                .get("status", {})
                .get("availableReplicas")
                == 2
            )
        )
        pods = get_json(kubectl, "pods", "-n", k8s_namespace, "-l", "app=gpu")["items"]
        nodes = {p["spec"]["nodeName"] for p in pods}
        assert nodes <= {"gpu-ondemand-0", "gpu-ondemand-1"}, nodes

    def test_spot_toleration_lands_on_spot_and_none_never_does(
        self, kubectl: Kubectl, k8s_namespace: str
    ) -> None:
        spot = {"imagegen.dev/capacity-type": "spot"}
        tolerate = [
            {
                "key": "imagegen.dev/spot",
                "operator": "Equal",
                "value": "true",
                "effect": "NoSchedule",
            }
        ]
        apply(
            kubectl,
            {
                **pod("tolerant", nodeSelector=spot, tolerations=tolerate),
                "metadata": {"name": "tolerant", "namespace": k8s_namespace},
            },
        )
        apply(
            kubectl,
            {
                **pod("intolerant", nodeSelector=spot),
                "metadata": {"name": "intolerant", "namespace": k8s_namespace},
            },
        )
        node = wait_for(
            lambda: get_json(kubectl, "pod", "tolerant", "-n", k8s_namespace)["spec"].get(
                "nodeName"
            )
        )
        assert node.startswith("gpu-spot-")

        def unschedulable() -> bool:
            p = get_json(kubectl, "pod", "intolerant", "-n", k8s_namespace)
            conds = {c["type"]: c for c in p.get("status", {}).get("conditions", [])}
            return conds.get("PodScheduled", {}).get("reason") == "Unschedulable"

        wait_for(unschedulable)
        assert "nodeName" not in get_json(kubectl, "pod", "intolerant", "-n", k8s_namespace)["spec"]


class TestPodRunner:
    def test_labelled_pod_becomes_a_real_process_and_stops_with_the_pod(
        self, kubectl: Kubectl, k8s_namespace: str, stack: StackEnv, tmp_path: Path
    ) -> None:
        marker = tmp_path / "sigterm"
        server = textwrap.dedent(f"""
            import http.server, os, signal, sys
            def term(*_):
                open({str(marker)!r}, "w").write(str(os.getpid())); sys.exit(0)
            signal.signal(signal.SIGTERM, term)
            port = int(os.environ["IMAGEGEN_HTTP_PORT"])
            open({str(tmp_path / "pid")!r}, "w").write(str(os.getpid()))
            assert os.environ["GREETING"] == "hello", os.environ.get("GREETING")
            handler = http.server.SimpleHTTPRequestHandler
            http.server.HTTPServer(("127.0.0.1", port), handler).serve_forever()
        """)
        manifest = pod(
            "runner",
            labels={"imagegen.dev/local-runner": "true"},
            terminationGracePeriodSeconds=10,
            container={
                "command": ["python", "-c", server],
                "env": [{"name": "GREETING", "value": "hello"}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            },
        )
        manifest["metadata"]["namespace"] = k8s_namespace
        apply(kubectl, manifest)

        def ready() -> bool:
            p = get_json(kubectl, "pod", "runner", "-n", k8s_namespace)
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )

        wait_for(ready, timeout=60)
        pid = int(wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text()))
        os.kill(pid, 0)  # a real process exists

        kubectl("delete", "pod", "runner", "-n", k8s_namespace, "--wait=true", timeout=60)
        assert marker.read_text() == str(pid), "the process got SIGTERM"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


class TestKafka:
    async def test_group_consumes_commits_and_lag_is_readable(
        self, stack: StackEnv, kafka_topic: Any
    ) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        topic = await kafka_topic(partitions=2)
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        await producer.start()
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode(), partition=i % 2)
        await producer.stop()

        group = unique("g")
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=stack.kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        got = 0
        try:
            while got < 4:
                batch = await consumer.getmany(timeout_ms=1000, max_records=4 - got)
                for tp, msgs in batch.items():
                    got += len(msgs)
                    await consumer.commit({tp: msgs[-1].offset + 1})
        finally:
            await consumer.stop()

        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        committed = await admin.list_consumer_group_offsets(group)
        await admin.close()
        probe = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
        await probe.start()
        tps = [TopicPartition(topic, p) for p in (0, 1)]
        ends = await probe.end_offsets(tps)
        await probe.stop()
        lag = sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
        assert sum(ends.values()) == 10
        assert lag == 10 - got == 6


class TestRedisAndS3:
    async def test_redis_round_trip(self, stack: StackEnv) -> None:
        import redis.asyncio as aioredis

        r = aioredis.from_url(stack.redis_url)
        key = unique("k")
        await r.set(key, b"v", ex=60)
        assert await r.get(key) == b"v"
        await r.aclose()

    def test_s3_put_get_and_presigned_url(self, stack: StackEnv, s3_bucket: str) -> None:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=stack.s3_endpoint,
            aws_access_key_id=stack.s3_access_key,
            aws_secret_access_key=stack.s3_secret_key,
            region_name="us-east-1",
        )
        s3.put_object(Bucket=s3_bucket, Key="a/b.png", Body=b"\x89PNG data")
        assert s3.get_object(Bucket=s3_bucket, Key="a/b.png")["Body"].read() == b"\x89PNG data"
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": s3_bucket, "Key": "a/b.png"}, ExpiresIn=60
        )
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.read() == b"\x89PNG data"
