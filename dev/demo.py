"""The README's first command, end to end on the local stack (run by `make demo`).

Installs the CRDs and the operator with Helm, applies the example models and the tiny pool, submits
prompts across the three tiers through the client with a progress bar, lets the pool scale, then
prints `kubectl get imagegen`, the per-request results table, and writes the images plus a contact
sheet to out/demo/. Then the same pool through its HTTP gateway: the `imagegen` CLI with
`--gateway` and an API key from the pool's keys Secret (POST /v1/generations, polled by id).

Everything runs as real pods: the operator and the pool's workers are containers from the images
`make images` built, on the stack's kubelet nodes (dev/realpods.py) — the warm workers on the
on-demand node, the cold ones on the spot node — with probes, preStop drain, SIGTERM, uid 10001
and a read-only root filesystem, all through the kubelet. The pool's gateway runs from the built
gateway image on the on-demand node; the host reaches its pod address directly (no kube-proxy on
the dev stack: the pod bridges are the host's).

The prompts go to shapes-sdxl, the tiny SDXL trained in code on coloured shapes (`dev/setup`
trains it once per machine); the demo publishes the weights to the stack's S3 and the ImageModel
loads them from there (an s3:// source, as production weights would), so a person can check each
picture against the prompt printed under it; the demo also reads every picture's colours back
from its pixels and prints how many match.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))

import realpods  # noqa: E402
import yaml  # noqa: E402
from demo_report import contact_sheet, results_table  # noqa: E402
from PIL import Image  # noqa: E402

NAMESPACE = "imagegen-demo"
POOL = "tiny"
MODEL = "shapes-sdxl"
# (shape, colour, background): every shape and every colour, as foreground and as background.
SCENES = [
    ("circle", "red", "blue"), ("square", "yellow", "purple"), ("triangle", "white", "green"),
    ("circle", "black", "yellow"), ("square", "green", "white"), ("triangle", "blue", "red"),
    ("circle", "purple", "white"), ("square", "red", "black"), ("triangle", "yellow", "blue"),
    ("circle", "white", "purple"), ("square", "blue", "yellow"), ("triangle", "green", "black"),
]
PROMPTS = [f"a {color} {shape} on a {background} background"
           for shape, color, background in SCENES]
TIERS = ("turbo", "fast", "relax")
# The gateway's API keys Secret (key `keys.json`) and the demo's one key (dev only).
GATEWAY_SECRET = "imagegen-demo-keys"
GATEWAY_KEY_NAME = "demo"
GATEWAY_KEY = "sk-demo-local-stack-0123456789"


def step(n: int, total: int, text: str) -> None:
    print(f"\n\033[1m[{n}/{total}] {text}\033[0m", flush=True)


def stack_env() -> dict[str, str]:
    out = subprocess.run([str(ROOT / "dev" / "stack"), "env", "--json"], check=True,
                         capture_output=True, text=True).stdout
    env = json.loads(out)
    os.environ.update(env)
    return env


def kubectl(*args: str, check: bool = True, capture: bool = True) -> str:
    proc = subprocess.run(["kubectl", *args], check=False, capture_output=capture, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout if capture else ""


OPERATOR_NAMESPACE = "imagegen-system"


def install_operator(env: dict[str, str]) -> None:
    """`helm upgrade --install` of charts/imagegen-operator, as on a real cluster: two replicas
    (leader election by Lease: one acts, one stands by), the chart's ServiceAccount and RBAC,
    its pods from the built operator image on the on-demand real node."""
    helm = str(Path(env["IMAGEGEN_STATE"]) / "bin" / "helm")
    chart = str(ROOT / "charts" / "imagegen-operator")
    args = [helm, "upgrade", "--install", "imagegen-operator", chart,
            "-n", OPERATOR_NAMESPACE, "--create-namespace", "--wait", "--timeout", "180s",
            *realpods.operator_helm_args()]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"helm install failed:\n{proc.stdout}\n{proc.stderr}")
    print(kubectl("get", "deploy,pods", "-n", OPERATOR_NAMESPACE, "-o", "wide"))


# What shows that a pod is a container from a built image on a real node: node and image ID.
POD_COLUMNS = ("custom-columns=NAME:.metadata.name,STATUS:.status.phase,NODE:.spec.nodeName,"
               "IP:.status.podIP,IMAGE:.spec.containers[0].image,"
               "IMAGE-ID:.status.containerStatuses[0].imageID")


def publish_shapes_weights(env: dict[str, str]) -> str:
    """The trained shapes-sdxl folder into the stack's S3 (once per version); its s3:// URL."""
    import boto3
    from botocore.config import Config
    from imagegen_worker.pipelines import builtin

    folder = builtin.shapes_dir()
    if not (folder / "model_index.json").exists():
        raise SystemExit(f"shapes-sdxl is not trained ({folder}): run `make setup`")
    s3 = boto3.client("s3", endpoint_url=env["IMAGEGEN_S3_ENDPOINT"],
                      config=Config(s3={"addressing_style": "path"}))
    bucket, prefix = "imagegen-models", f"shapes-sdxl/{folder.name}"
    if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=bucket)
    have = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
            .get("Contents", [])}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(folder).as_posix()}"
        if key not in have:
            s3.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{prefix}"


def wait_for(what: str, check: callable, timeout: float, every: float = 2.0) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def pool_status() -> dict:  # type: ignore[type-arg]
    raw = kubectl("get", "gp", POOL, "-n", NAMESPACE, "-o", "json", check=False)
    return json.loads(raw).get("status", {}) if raw else {}


async def submit_and_watch(env: dict[str, str], count: int, steps: int, out_dir: Path) -> None:
    from imagegen_api.messages import GenerationRequest
    from imagegen_client import ImagegenClient, new_request_id

    # Fresh seeds each run (so the images are generated, not served from the Redis cache),
    # except the last few requests: repeats of the first ones, answered from the cache.
    base = int(time.time()) % 1_000_000 * 1000
    repeats = min(6, count // 10)
    requests = []
    for i in range(count):
        j = i - (count - repeats) if i >= count - repeats else i
        tier = TIERS[i % len(TIERS)]
        requests.append(GenerationRequest(
            request_id=new_request_id(f"demo-{tier}"), model=MODEL,
            prompt=PROMPTS[j % len(PROMPTS)], seed=base + j, tier=TIERS[j % len(TIERS)],
            width=64, height=64, steps=steps))
    prompt_of = {r.request_id: r.prompt for r in requests}
    async with ImagegenClient(env["IMAGEGEN_KAFKA_BOOTSTRAP"], NAMESPACE, POOL,
                              redis_url=env["IMAGEGEN_REDIS_URL"]) as client:
        ids = await client.submit(requests)
        started = time.monotonic()
        last_scale_print = 0.0

        def progress(got: dict) -> None:  # type: ignore[type-arg]
            nonlocal last_scale_print
            done = len(got)
            bar = "#" * int(30 * done / len(ids))
            sys.stderr.write(f"\r  [{bar:<30}] {done}/{len(ids)} answered "
                             f"({time.monotonic() - started:5.1f}s)")
            sys.stderr.flush()
            if time.monotonic() - last_scale_print > 6:
                last_scale_print = time.monotonic()
                st = pool_status()
                sys.stderr.write(
                    f"\n  pool: ready {st.get('ready', '?')}  warm {st.get('warm', {})}  "
                    f"cold {st.get('cold', {})}  queue {st.get('queue', {}).get('lag', '?')}\n")

        results = await client.wait(ids, within=600, progress=progress)
        sys.stderr.write("\n")
        ordered = [results[i] for i in ids if i in results]
        print(results_table(ordered))
        missing = len(ids) - len(results)
        if missing:
            raise SystemExit(f"{missing} request(s) unanswered after 600 s")
        with_images = [r for r in ordered if r.images]
        paths = await client.download(with_images, out_dir)
        prompts = [prompt_of[r.request_id] for r in with_images]
        sheet = contact_sheet(paths, out_dir / "contact-sheet.png", captions=prompts)
        print(f"\n  {len(paths)} images written to {out_dir}/, contact sheet (each prompt "
              f"under its picture): {sheet}")
        print(f"  {colour_check(paths, prompts)}")


def colour_check(paths: list[Path], prompts: list[str]) -> str:
    """How many pictures show the prompt's colours, read back from their pixels."""
    from imagegen_worker.pipelines import shapes_measure

    good = shape_good = 0
    for path, prompt in zip(paths, prompts, strict=True):
        _, color, shape, _, _, background, _ = prompt.split()
        with Image.open(path) as img:
            reading = shapes_measure.read(img)
        good += reading.matches(color=color, background=background)
        shape_good += reading.matches(color=color, background=background, shape=shape)
    return (f"read back from the pixels: {good}/{len(paths)} pictures show the prompt's colours "
            f"(shape and background), {shape_good}/{len(paths)} also its shape")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=60, help="prompts to submit")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per image")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    args = parser.parse_args()
    total = 8
    step(1, total, "Local stack (Kubernetes control plane + KWOK GPU nodes, Kafka, Redis, MinIO)")
    env = stack_env()
    print(subprocess.run([str(ROOT / "dev" / "stack"), "status"], capture_output=True,
                         text=True).stdout)
    print("  the built images pushed to the stack's registry, pulled by the real nodes:")
    realpods.push_images()
    print(kubectl("get", "nodes", "-o", "wide"))

    step(2, total, "Install the operator with Helm (RBAC, 2 replicas, one leader by Lease)")
    # Helm installs crds/ only on first install and never upgrades them: apply them first, as
    # the README says to on upgrades.
    print(kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")))
    install_operator(env)
    print(f"  operator logs: kubectl logs -n {OPERATOR_NAMESPACE} deploy/imagegen-operator")

    step(3, total, f"Apply the example models and the tiny pool in namespace {NAMESPACE}")
    kubectl("create", "namespace", NAMESPACE, check=False)
    secret = kubectl("create", "secret", "generic", "imagegen-s3", "-n", NAMESPACE,
                     f"--from-literal=AWS_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']}",
                     f"--from-literal=AWS_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']}",
                     "--dry-run=client", "-o", "yaml")
    subprocess.run(["kubectl", "apply", "-f", "-"], input=secret, text=True, check=True,
                   capture_output=True)
    keys = json.dumps({"keys": [{"name": GATEWAY_KEY_NAME, "key": GATEWAY_KEY,
                                 "ratePerSecond": 20, "burst": 60}]})
    secret = kubectl("create", "secret", "generic", GATEWAY_SECRET, "-n", NAMESPACE,
                     f"--from-literal=keys.json={keys}", "--dry-run=client", "-o", "yaml")
    subprocess.run(["kubectl", "apply", "-f", "-"], input=secret, text=True, check=True,
                   capture_output=True)
    # A fresh pool each run, so the scaling below starts from the warm minimum.
    if kubectl("get", "gp", POOL, "-n", NAMESPACE, check=False):
        print(f"  removing the previous demo's pool {POOL} (its children go with it)")
        kubectl("delete", "gp", POOL, "-n", NAMESPACE, "--wait=true", "--timeout=90s",
                check=False)
        wait_for("the previous demo's worker pods to stop",
                 lambda: not kubectl("get", "pods", "-n", NAMESPACE, "-o", "name",
                                     check=False).strip(), timeout=120)
    print(kubectl("apply", "-n", NAMESPACE, "-f",
                  str(ROOT / "manifests" / "examples" / "tiny-model.yaml")))
    # The shapes model's weights, as production weights would be: in S3, loaded by the workers.
    shapes = yaml.safe_load((ROOT / "manifests" / "examples" / "shapes-model.yaml").read_text())
    shapes["spec"]["source"] = publish_shapes_weights(env)
    print(f"  {MODEL} weights published to {shapes['spec']['source']}")
    current = kubectl("get", "imagemodel", MODEL, "-n", NAMESPACE, "-o",
                      "jsonpath={.spec.source}", check=False)
    if current and current != shapes["spec"]["source"]:
        # A source is immutable (other weights are another model): re-create it.
        kubectl("delete", "imagemodel", MODEL, "-n", NAMESPACE, "--wait=true")
    print(subprocess.run(["kubectl", "apply", "-n", NAMESPACE, "-f", "-"],
                         input=yaml.safe_dump(shapes), text=True, check=True,
                         capture_output=True).stdout)
    # The example pool serves tiny-sdxl; the demo's pool serves the shapes model as well, from
    # the built worker image on the real nodes (a worker: 500m CPU requested, 2 vCPUs here).
    pool = yaml.safe_load((ROOT / "manifests" / "examples" / "tiny-pool.yaml").read_text())
    pool["spec"]["models"] = [MODEL, *pool["spec"]["models"]]
    pool["spec"]["resources"] = {"cpu": "500m", "memory": "3Gi"}
    # Its HTTP gateway too: one pod (no GPU), API keys from the Secret made above.
    pool["spec"]["gateway"] = {"enabled": True, "replicas": 1,
                               "auth": {"secretName": GATEWAY_SECRET},
                               "resources": {"cpu": "100m", "memory": "256Mi"}}
    realpods.place_pool_on_real_nodes(pool)
    print(subprocess.run(["kubectl", "apply", "-n", NAMESPACE, "-f", "-"],
                         input=yaml.safe_dump(pool), text=True, check=True,
                         capture_output=True).stdout)

    step(4, total, "Wait for a warm worker (a real process that loaded the model and warmed "
                   "up) and the gateway")
    wait_for("a ready warm worker", lambda: pool_status().get("warm", {}).get("ready", 0) >= 1,
             timeout=300)
    wait_for("a ready gateway pod",
             lambda: pool_status().get("gateway", {}).get("ready", 0) >= 1, timeout=120)
    print(kubectl("get", "imagegen", "-n", NAMESPACE))
    print(kubectl("get", "pods", "-n", NAMESPACE, "-o", POD_COLUMNS))

    step(5, total, f"Submit {args.count} prompts across tiers {', '.join(TIERS)}; the pool scales")
    asyncio.run(submit_and_watch(env, args.count, args.steps, args.out))

    step(6, total, "Queue drained: cold goes back to zero, warm to its minimum after the "
                   "down window")
    watch_scale_down()

    step(7, total, "The same pool through its HTTP gateway: `imagegen submit --gateway`")
    through_gateway(args.steps, args.out / "gateway")

    step(8, total, "What a platform engineer sees")
    print(kubectl("get", "imagegen", "-n", NAMESPACE, "-o", "wide"))
    for ns in (OPERATOR_NAMESPACE, NAMESPACE):
        print(kubectl("get", "pods", "-n", ns, "-o", "wide"))
        print(kubectl("get", "pods", "-n", ns, "-o", POD_COLUMNS))
    print(kubectl("describe", "gp", POOL, "-n", NAMESPACE))
    uid = json.loads(kubectl("get", "gp", POOL, "-n", NAMESPACE, "-o", "json"))["metadata"]["uid"]
    print(kubectl("get", "events", "-n", NAMESPACE, "--field-selector",
                  f"involvedObject.uid={uid}", "--sort-by=.lastTimestamp"))
    print(f"Images: {args.out}/ (contact sheet: {args.out}/contact-sheet.png). The pool keeps "
          f"running: `eval \"$(dev/stack env)\"; kubectl get gp -n {NAMESPACE} -w`.")


def gateway_pod() -> dict:  # type: ignore[type-arg]
    raw = kubectl("get", "pods", "-n", NAMESPACE, "-l",
                  f"imagegen.dev/pool={POOL},app.kubernetes.io/component=gateway", "-o", "json")
    ready = [p for p in json.loads(raw)["items"] if not p["metadata"].get("deletionTimestamp")
             and any(c["type"] == "Ready" and c["status"] == "True"
                     for c in p.get("status", {}).get("conditions", []))]
    if not ready:
        raise SystemExit(f"no ready gateway pod in {NAMESPACE}:\n"
                         + kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide"))
    return ready[0]  # type: ignore[no-any-return]


def through_gateway(steps: int, out_dir: Path) -> None:
    """Three prompts through the pool's gateway with the CLI, printed as the Kafka step."""
    pod = gateway_pod()
    url = f"http://{pod['status']['podIP']}:8000"
    print(f"  status.gateway.url: {pool_status().get('gateway', {}).get('url')} (in-cluster); "
          f"pod {pod['metadata']['name']} on {pod['spec']['nodeName']}, "
          f"{pod['spec']['containers'][0]['image']}")
    print(f"  the host reaches the pod at {url} (its node's bridge; no kube-proxy here)")
    seed = int(time.time()) % 1_000_000 * 1000 + 500
    cmd = ["imagegen", "submit", "--gateway", url, "--api-key", GATEWAY_KEY,
           "--model", MODEL, "--tier", "fast", "--size", "64x64", "--steps", str(steps),
           "--seed", str(seed), "--out", os.path.relpath(out_dir, ROOT), *PROMPTS[:3]]
    print(f"  $ {shlex.join(cmd)}", flush=True)
    exe = str(Path(sys.executable).parent / "imagegen")
    proc = subprocess.run([exe, *cmd[1:]], cwd=ROOT, text=True)
    if proc.returncode != 0:
        logs = kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"], "--tail=40",
                       check=False)
        raise SystemExit(f"imagegen submit --gateway exited {proc.returncode}; gateway log:\n"
                         f"{logs}")


def watch_scale_down(limit_s: float = 120.0) -> None:
    started = time.monotonic()
    print(f"  {'t':>5}  {'READY':<6} {'WARM':>4} {'COLD':>4} {'QUEUE':>5}  LAST SCALE REASON")
    while time.monotonic() - started < limit_s:
        st = pool_status()
        warm, cold = st.get("warm", {}), st.get("cold", {})
        print(f"  {time.monotonic() - started:4.0f}s  {st.get('ready', '?'):<6} "
              f"{warm.get('desired', '?'):>4} {cold.get('desired', '?'):>4} "
              f"{st.get('queue', {}).get('lag', '?'):>5}  {st.get('lastScaleReason', '')[:90]}",
              flush=True)
        if warm.get("desired") == 1 and cold.get("desired") == 0 and warm.get("ready") == 1 \
                and cold.get("replicas") == 0:
            return
        time.sleep(3)
    print("  (still scaling down; the down window is 20 s after the last busy poll)")


if __name__ == "__main__":
    main()
