"""Fixtures for tests on the real local stack (dev/stack): Kubernetes control plane with KWOK
GPU nodes, Kafka, Redis, MinIO and the local pod runner. Nothing here is faked.

`stack` starts the stack or reuses a running one; when a component cannot start, every test that
needs it FAILS (never skips) with the component's name and the tail of its log.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "dev" / "stack"


@dataclass(frozen=True)
class StackEnv:
    kubeconfig: str
    kafka_bootstrap: str
    redis_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    bin_dir: Path
    state_dir: Path
    repo_root: Path
    env: dict[str, str]

    @property
    def kubectl_bin(self) -> str:
        return str(self.bin_dir / "kubectl")

    @property
    def helm_bin(self) -> str:
        return str(self.bin_dir / "helm")


@pytest.fixture(scope="session")
def stack() -> StackEnv:
    proc = subprocess.run([str(STACK), "up"], capture_output=True, text=True, timeout=3000)
    if proc.returncode != 0:
        pytest.fail(f"the local stack did not start (dev/stack up exited {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}", pytrace=False)
    env = json.loads(subprocess.run([str(STACK), "env", "--json"], capture_output=True,
                                    text=True, check=True).stdout)
    os.environ.update(env)
    return StackEnv(
        kubeconfig=env["KUBECONFIG"], kafka_bootstrap=env["IMAGEGEN_KAFKA_BOOTSTRAP"],
        redis_url=env["IMAGEGEN_REDIS_URL"], s3_endpoint=env["IMAGEGEN_S3_ENDPOINT"],
        s3_access_key=env["AWS_ACCESS_KEY_ID"], s3_secret_key=env["AWS_SECRET_ACCESS_KEY"],
        bin_dir=Path(env["IMAGEGEN_STATE"]) / "bin", state_dir=Path(env["IMAGEGEN_STATE"]),
        repo_root=ROOT, env=env,
    )


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def kubectl(stack: StackEnv) -> Kubectl:
    """kubectl(*args, check=True, input=None) with the stack's kubectl and admin kubeconfig."""

    def run(*args: str, check: bool = True, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([stack.kubectl_bin, f"--kubeconfig={stack.kubeconfig}", *args],
                              capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    return run


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def k8s_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = unique("t")
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def kafka_topic(stack: StackEnv) -> AsyncIterator[Callable[..., object]]:
    """Factory: await kafka_topic(partitions=3) -> a new topic name; deleted afterwards."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    created: list[str] = []

    async def make(partitions: int = 1, prefix: str = "t") -> str:
        name = unique(prefix)
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        created.append(name)
        return name

    yield make
    if created:
        await admin.delete_topics(created)
    await admin.close()


@pytest.fixture
def s3_bucket(stack: StackEnv) -> Iterator[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint,
                      aws_access_key_id=stack.s3_access_key,
                      aws_secret_access_key=stack.s3_secret_key, region_name="us-east-1")
    name = unique("bucket")
    s3.create_bucket(Bucket=name)
    yield name
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)
