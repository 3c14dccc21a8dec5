"""Issue 11 end to end on real pods: the pool's workers are containers from the built worker image
(`make images`, pushed to the stack's registry by `dev/stack push-images`), run by real kubelets
(containerd + runc) on the stack's two real nodes — warm on the on-demand node, cold on the spot
node — reading their model from one ReadWriteMany claim mounted read-only on both nodes.

What the kubelet does here and the local pod runner never did: pulls the image, runs it as uid
10001 with a read-only root filesystem, mounts the claim, the ConfigMap and the S3 Secret, runs
the probes, and on scale-down runs the preStop drain and sends SIGTERM within the grace period.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imagegen_api import naming

from bench.drain_scenario import pool_manifest, run
from tests.integration.conftest import Kubectl, StackEnv, unique, wait_for

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "dev"))
import realpods  # noqa: E402

ON_DEMAND, SPOT = "real-ondemand-0", "real-spot-0"


@pytest.fixture(scope="module")
def worker_image(stack: StackEnv) -> str:
    """The worker image of these sources, in the registry and on both real nodes."""
    proc = subprocess.run([str(ROOT / "dev" / "stack"), "push-images"], capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, (
        "the images of these sources must be built (make images) and the stack's real nodes "
        f"up:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return realpods.image_ref("worker")


@pytest.fixture
def shared_weights(kubectl: Kubectl, stack: StackEnv, worker_ns: str) -> Iterator[str]:
    """A ReadWriteMany claim holding the trained shapes-sdxl weights, bound to a hostPath volume
    (both real nodes are this machine), and an ImageModel loading from it (pvc://)."""
    from imagegen_worker.pipelines import builtin

    trained = builtin.shapes_dir()
    assert (trained / "model_index.json").exists(), f"shapes-sdxl not trained: {trained}"
    volume = unique("weights")
    host_dir = stack.state_dir / "volumes" / volume
    shutil.copytree(trained, host_dir / "shapes-sdxl")
    for path in [host_dir, *host_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # uid 10001 reads them
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "storageClassName": volume, "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": str(host_dir), "type": "Directory"}}}))
    kubectl("apply", "-n", worker_ns, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "weights"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": volume,
                 "resources": {"requests": {"storage": "1Gi"}}}}))
    shapes = {"apiVersion": naming.API_VERSION, "kind": "ImageModel",
              "metadata": {"name": "shapes"},
              "spec": {"source": "pvc://weights/shapes-sdxl", "pipeline": "sdxl",
                       "dtype": "float32",
                       "defaults": {"sampler": "euler", "steps": 8, "width": 64, "height": 64}}}
    kubectl("apply", "-n", worker_ns, "-f", "-", input=json.dumps(shapes))
    yield "shapes"
    kubectl("delete", "pv", volume, "--wait=false", check=False)
    shutil.rmtree(host_dir, ignore_errors=True)


def _pods(kubectl: Kubectl, ns: str, role: str) -> list[dict[str, Any]]:
    out = kubectl("get", "pods", "-n", ns, "-l", f"{naming.LABEL_ROLE}={role}", "-o", "json")
    return list(json.loads(out.stdout)["items"])


def _running_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


async def test_workers_run_as_containers_on_both_real_nodes(
        kubectl: Kubectl, stack: StackEnv, worker_ns: str, worker_image: str,
        shared_weights: str) -> None:
    ns, pool = worker_ns, unique("real")
    env = realpods.pod_env()
    manifest = pool_manifest(pool, shared_weights, warm_min=1, warm_max=1, cold_max=1,
                             partitions=2, activation_lag=2, down_window=10, poll=1)
    spec = manifest["spec"]
    spec["resources"] = {"cpu": "500m", "memory": "3Gi"}
    # The workers' endpoints as pods reach them (the operator on the host reaches them too).
    spec["queue"]["bootstrapServers"] = env["IMAGEGEN_KAFKA_BOOTSTRAP"]
    spec["cache"] = {"redisUrl": env["IMAGEGEN_REDIS_URL"]}
    spec["storage"] = {"endpoint": env["IMAGEGEN_S3_ENDPOINT"], "credentialsSecret": "imagegen-s3"}
    realpods.place_pool_on_real_nodes(manifest)
    assert spec["worker"]["image"] == worker_image
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))

    def warm_ready() -> dict[str, Any] | None:
        pods = [p for p in _pods(kubectl, ns, naming.ROLE_WARM) if _running_ready(p)]
        return pods[0] if pods else None

    warm = wait_for(warm_ready, 300, "the warm worker container to load the model from the "
                                     "claim and pass its readiness probe")
    assert isinstance(warm, dict)
    name = warm["metadata"]["name"]
    assert warm["spec"]["nodeName"] == ON_DEMAND
    status = warm["status"]["containerStatuses"][0]
    # A container of the built image, started by containerd (not a local process).
    assert warm["spec"]["containers"][0]["image"] == worker_image
    assert "sha256:" in status["imageID"] and status["started"] is True
    assert status["containerID"].startswith("containerd://")
    # Through the kubelet: exec and logs (the API server's kubelet client certificate).
    uid = kubectl("exec", "-n", ns, name, "--", "id", "-u").stdout.strip()
    assert uid == "10001"
    touch = kubectl("exec", "-n", ns, name, "--", "touch", "/opt/venv/x", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr
    mounted = kubectl("exec", "-n", ns, name, "--", "ls", naming.MODEL_CACHE_DIR).stdout
    assert "shapes-sdxl" in mounted
    assert kubectl("logs", "-n", ns, name).stdout.strip()

    # A burst: cold wakes on the spot node, from the same claim, and drains back to zero.
    drained = await run(kubectl=stack.kubectl_bin, bootstrap=stack.kafka_bootstrap,
                        namespace=ns, pool=pool, count=80, steps=50, settle_warm=1,
                        limit_s=600)
    timeline = "\n".join(f"{s.t:6.1f}s lag={s.lag} warm={s.warm_replicas}/{s.warm_ready} "
                         f"cold={s.cold_replicas}/{s.cold_ready} answered={s.answered}"
                         for s in drained.samples)
    assert len(drained.results) == 80, timeline
    assert {r.status for r in drained.results.values()} == {"succeeded"}, timeline
    assert drained.duplicates == 0, timeline
    assert any(s.cold_ready >= 1 for s in drained.samples), f"cold never ready\n{timeline}"
    assert drained.samples[-1].cold_replicas == 0, timeline

    events = json.loads(kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    cold_nodes = {e.get("source", {}).get("host") for e in events
                  if e["involvedObject"]["name"].startswith(f"{pool}-cold-")
                  and e["reason"] == "Started"}
    assert cold_nodes == {SPOT}, cold_nodes
    # Scale-down through the kubelet: it ran the pod's stop sequence (preStop drain, SIGTERM).
    killed = [e for e in events if e["involvedObject"]["name"].startswith(f"{pool}-cold-")
              and e["reason"] == "Killing"]
    assert killed, "the kubelet never stopped the cold worker"


async def test_a_read_write_once_cache_claim_across_nodes_is_reported(
        kubectl: Kubectl, worker_ns: str) -> None:
    """The claim the pool's model reads is ReadWriteOnce while warm and cold workers run on
    different nodes: the pool says so (Degraded, CacheClaimPlacement) instead of leaving pods
    in Multi-Attach on a real cluster."""
    ns, pool = worker_ns, unique("rwo")
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "once"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "none",
                 "resources": {"requests": {"storage": "1Gi"}}}}))
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({
        "apiVersion": naming.API_VERSION, "kind": "ImageModel", "metadata": {"name": "once"},
        "spec": {"source": "pvc://once/model", "pipeline": "sdxl"}}))
    manifest = pool_manifest(pool, "once", warm_min=0, warm_max=1, cold_max=1)
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))

    def degraded() -> dict[str, Any] | None:
        out = kubectl("get", "gp", pool, "-n", ns, "-o", "json").stdout
        conds = json.loads(out).get("status", {}).get("conditions", [])
        found = next((c for c in conds if c["type"] == "Degraded"
                      and c.get("reason") == "CacheClaimPlacement"), None)
        return found

    cond = wait_for(degraded, 60, "Degraded/CacheClaimPlacement on the pool")
    assert isinstance(cond, dict) and cond["status"] == "True"
    assert "'once' is ReadWriteOnce" in cond["message"] and "Multi-Attach" in cond["message"]


GATEWAY_KEY = "sk-e2e-real-pods-0123456789"


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Authorization", f"Bearer {GATEWAY_KEY}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_gateway_pods_serve_openai_and_lose_nothing_on_restart(
        kubectl: Kubectl, stack: StackEnv, worker_ns: str, worker_image: str) -> None:
    """The operator runs the pool's gateway from the built gateway image on a real node; the
    `openai` package generates through it; 50 async requests survive the gateway pod being
    deleted while they are in flight (each answered, and retrievable from the new pod)."""
    import base64
    import io
    import time

    import openai
    from PIL import Image

    ns, pool = worker_ns, unique("gw")
    kubectl("create", "secret", "generic", "keys", "-n", ns, "--from-literal=keys.json="
            + json.dumps({"keys": [{"name": "e2e", "key": GATEWAY_KEY, "burst": 1000,
                                    "ratePerSecond": 500}]}))
    env = realpods.pod_env()
    manifest = pool_manifest(pool, "tiny-sdxl", warm_min=1, warm_max=1, cold_max=0,
                             partitions=2)
    spec = manifest["spec"]
    spec["resources"] = {"cpu": "500m", "memory": "3Gi"}
    spec["queue"]["bootstrapServers"] = env["IMAGEGEN_KAFKA_BOOTSTRAP"]
    spec["cache"] = {"redisUrl": env["IMAGEGEN_REDIS_URL"]}
    spec["storage"] = {"endpoint": env["IMAGEGEN_S3_ENDPOINT"], "credentialsSecret": "imagegen-s3"}
    spec["gateway"] = {"enabled": True, "replicas": 1, "auth": {"secretName": "keys"},
                       "resources": {"cpu": "100m", "memory": "256Mi"}}
    realpods.place_pool_on_real_nodes(manifest)
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))

    def gateway_pod() -> dict[str, Any] | None:
        out = kubectl("get", "pods", "-n", ns, "-l",
                      f"{naming.LABEL_POOL}={pool},{naming.LABEL_COMPONENT}=gateway",
                      "-o", "json").stdout
        ready = [p for p in json.loads(out)["items"] if _running_ready(p)
                 and not p["metadata"].get("deletionTimestamp")]
        return ready[0] if ready else None

    def pool_ready() -> dict[str, Any] | None:
        st = json.loads(kubectl("get", "gp", pool, "-n", ns, "-o", "json").stdout).get(
            "status", {})
        gw = st.get("gateway", {})
        return st if gw.get("ready") == 1 and st.get("warm", {}).get("ready") == 1 else None

    status = wait_for(pool_ready, 300, "the warm worker and the gateway pod to be ready")
    assert isinstance(status, dict)
    assert status["gateway"]["url"] == f"http://{pool}-gateway.{ns}.svc:{naming.GATEWAY_HTTP_PORT}"
    pod = wait_for(gateway_pod, 60, "a ready gateway pod")
    assert isinstance(pod, dict)
    assert pod["spec"]["nodeName"] == ON_DEMAND
    assert pod["spec"]["containers"][0]["image"] == realpods.image_ref("gateway")
    # No kube-proxy on the dev stack: the host reaches the pod network directly.
    url = f"http://{pod['status']['podIP']}:{naming.GATEWAY_HTTP_PORT}"

    client = openai.OpenAI(base_url=url + "/v1", api_key=GATEWAY_KEY, max_retries=0,
                           timeout=180)
    try:
        img = client.images.generate(model="tiny-sdxl", prompt=f"real pods {pool}", n=2,
                                     size="64x64", response_format="b64_json",
                                     extra_body={"steps": 4, "seed": 7})
    except openai.APIError as err:
        logs = kubectl("logs", "-n", ns, pod["metadata"]["name"], check=False)
        raise AssertionError(f"{err}\n--- gateway log ---\n{logs.stdout[-3000:]}") from err
    assert len(img.data) == 2
    for item in img.data:
        assert item.b64_json is not None
        assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (64, 64)

    ids = []
    for i in range(50):
        code, body = _http("POST", url + "/v1/generations",
                           {"model": "tiny-sdxl", "prompt": f"in flight {i} {pool}",
                            "size": "64x64", "steps": 8, "seed": i, "tier": "fast"})
        assert code == 202, body
        ids.append(body["id"])
    # The gateway pod goes away while the 50 are queued or running.
    kubectl("delete", "pod", "-n", ns, pod["metadata"]["name"], "--wait=false")
    new = wait_for(lambda: (p := gateway_pod()) and p["metadata"]["name"] !=
                   pod["metadata"]["name"] and p, 180, "the replacement gateway pod")
    assert isinstance(new, dict)
    url = f"http://{new['status']['podIP']}:{naming.GATEWAY_HTTP_PORT}"
    deadline = time.monotonic() + 300
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        for rid in ids:
            if states.get(rid) != "succeeded":
                code, body = _http("GET", f"{url}/v1/generations/{rid}")
                states[rid] = body.get("state", f"http {code}") if code == 200 else f"{code}"
        if all(s == "succeeded" for s in states.values()):
            break
        time.sleep(2)
    assert [s for s in states.values() if s != "succeeded"] == [], states
