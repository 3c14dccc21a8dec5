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


class StackDown(RuntimeError):
    """`dev/stack up` failed; the message carries its output (the failing component's log)."""


def start_stack() -> StackEnv:
    """Start (or reuse) the local stack and describe it; also used by the benchmarks."""
    proc = subprocess.run([str(STACK), "up"], capture_output=True, text=True, timeout=3000)
    if proc.returncode != 0:
        raise StackDown(f"the local stack did not start (dev/stack up exited "
                        f"{proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
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


@pytest.fixture(scope="session")
def stack() -> StackEnv:
    try:
        return start_stack()
    except StackDown as err:
        pytest.fail(str(err), pytrace=False)


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def kubectl_runner(stack: StackEnv) -> Kubectl:
    """kubectl(*args, check=True, input=None) with the stack's kubectl and admin kubeconfig
    (the fixture below; the benchmarks use it directly)."""

    def run(*args: str, check: bool = True, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([stack.kubectl_bin, f"--kubeconfig={stack.kubeconfig}", *args],
                              capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def kubectl(stack: StackEnv) -> Kubectl:
    return kubectl_runner(stack)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


TEST_NAMESPACE_PREFIX = "t"


@pytest.fixture
def k8s_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = unique(TEST_NAMESPACE_PREFIX)
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def apply_crds(kubectl: Kubectl) -> None:
    """The two CRDs from crds/, applied and Established."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/imagemodels.imagegen.dev", "crd/generationpools.imagegen.dev")


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    apply_crds(kubectl)


class OperatorProcess:
    """The real operator (`python -m imagegen_operator`) as a local process against the stack,
    watching `watch` (IMAGEGEN_WATCH_NAMESPACES: names or globs). By default only the tests' own
    namespaces (see k8s_namespace), so an operator under test elsewhere (the Helm install test,
    a benchmark) is never raced by this one."""

    def __init__(self, stack: StackEnv, watch: str = "",
                 extra_env: dict[str, str] | None = None) -> None:
        self.stack = stack
        self.watch = watch or f"{TEST_NAMESPACE_PREFIX}-*"
        self.extra_env = dict(extra_env or {})
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.log_path = stack.state_dir / "logs" / f"operator-test-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import time
        import urllib.request

        env = {**os.environ, **self.stack.env,
               "IMAGEGEN_OPERATOR_STANDALONE": "1",
               "IMAGEGEN_WATCH_NAMESPACES": self.watch,
               "IMAGEGEN_HTTP_PORT": str(self.health_port),
               "IMAGEGEN_METRICS_PORT": str(self.metrics_port),
               "IMAGEGEN_MODEL_POLL_SECONDS": "2",
               # KWOK worker pods are Ready but never consume: a backlog on them is "stalled".
               "IMAGEGEN_STALL_SECONDS": "8",
               **self.extra_env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # owned by the process for its lifetime
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "python"), "-m", "imagegen_operator"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"operator not healthy within 60 s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as resp:
            return str(resp.read().decode())

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no operator log)"


@pytest.fixture(scope="session", autouse=True)
def no_installed_operators(stack: StackEnv, kubectl: Kubectl) -> Iterator[None]:
    """An operator a `make demo` left installed (in-cluster, on the real nodes) is scaled to zero
    for the whole session, not only once a test asks for the operator under test: the tests that
    check the API server alone (CRD rules, status) must see no operator act either."""
    paused = pause_installed_operators(kubectl)
    yield
    resume_installed_operators(kubectl, paused)


@pytest.fixture(scope="session")
def operator(stack: StackEnv, crds: None) -> Iterator[OperatorProcess]:
    """The operator under test, alone: `no_installed_operators` (autouse) has scaled an operator
    a `make demo` left installed to zero for the session, so two operators never act on the
    same pools."""
    op = OperatorProcess(stack)
    op.start()
    yield op
    op.stop()


Paused = list[tuple[str, str, int]]


def pause_installed_operators(kubectl: Kubectl) -> Paused:
    """Scale every installed operator Deployment (a `make demo` leaves one) to zero and wait
    for its pods to go; returns what to restore (also used by the benchmarks)."""
    installed = json.loads(kubectl("get", "deploy", "-A", "-l",
                                   "app.kubernetes.io/name=imagegen-operator", "-o",
                                   "json").stdout)["items"]
    paused = [(d["metadata"]["namespace"], d["metadata"]["name"], d["spec"].get("replicas", 1))
              for d in installed if d["spec"].get("replicas", 1)]
    for ns, name, _ in paused:
        kubectl("scale", "deploy", name, "-n", ns, "--replicas=0")
    for ns, _, _ in paused:  # a terminating operator pod still reconciles until it exits
        kubectl("wait", "--for=delete", "pod", "-n", ns, "-l",
                "app.kubernetes.io/name=imagegen-operator", "--timeout=90s", check=False,
                timeout=120)
    return paused


def resume_installed_operators(kubectl: Kubectl, paused: Paused) -> None:
    for ns, name, replicas in paused:
        kubectl("scale", "deploy", name, "-n", ns, f"--replicas={replicas}", check=False)


def wait_for(check: Callable[[], object], timeout: float, what: str,
             interval: float = 0.5) -> object:
    """Poll until check() returns a truthy value; fail naming `what` and the last value."""
    import time

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as err:
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
