"""Running the operator and a pool's workers as real pods on the dev stack's kubelet nodes
(dev/localstack/node.py), from the images dev/images.sh built: what the demo and the e2e tests
on real pods share.

- Images: `localhost:15000/imagegen-<name>:<key>` (key: hash of the build inputs), pushed to the
  stack's registry by `dev/stack push-images` and pulled by the kubelets (IfNotPresent).
- Placement: real nodes carry the taint `imagegen.dev/real-node`; the warm pool goes to the
  on-demand real node, the cold pool to the spot one (also tainted `imagegen.dev/spot`).
- Addresses: pods reach the stack's services at the host's address (Layout.pod_env), and the API
  server explicitly (no kube-proxy: the `kubernetes` Service IP leads nowhere).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from localstack.layout import layout  # dev/ is on sys.path: this module is imported from it

DEV = Path(__file__).resolve().parent
REAL_NODE = "imagegen.dev/real-node"
REAL_TOLERATION = {"key": REAL_NODE, "operator": "Exists", "effect": "NoSchedule"}
SPOT_TOLERATION = {"key": "imagegen.dev/spot", "operator": "Exists", "effect": "NoSchedule"}


def image_ref(name: str) -> str:
    """The built image of the current sources as the nodes pull it from the stack's registry;
    a clear error when `make images` has not run."""
    proc = subprocess.run([str(DEV / "images.sh"), "ref", name], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"the {name} image of these sources is not built: run `make images` "
                           "(dev/images.sh build), then `dev/stack push-images`")
    return f"{layout().registry}/{proc.stdout.strip().removeprefix('localhost/')}"


def push_images() -> None:
    subprocess.run([str(DEV / "stack"), "push-images"], check=True)


def pod_env() -> dict[str, str]:
    return layout().pod_env()


def operator_helm_args() -> list[str]:
    """`helm install` settings that run the chart's operator pods on the on-demand real node."""
    ref = image_ref("operator")
    repo, tag = ref.rsplit(":", 1)
    env = pod_env()
    args = ["--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
            "--set", "image.pullPolicy=IfNotPresent",
            "--set-string", "nodeSelector.imagegen\\.dev/real-node=true",
            "--set-string", "nodeSelector.imagegen\\.dev/capacity-type=on-demand",
            "--set", f"tolerations[0].key={REAL_NODE}", "--set", "tolerations[0].operator=Exists",
            "--set", "tolerations[0].effect=NoSchedule",
            "--set", f"kafka.bootstrapServers={env['IMAGEGEN_KAFKA_BOOTSTRAP']}",
            "--set", f"redis.url={env['IMAGEGEN_REDIS_URL']}",
            "--set", f"s3.endpoint={env['IMAGEGEN_S3_ENDPOINT']}"]
    for i, key in enumerate(("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")):
        args += ["--set", f"extraEnv[{i}].name={key}",
                 "--set-string", f"extraEnv[{i}].value={env[key]}"]
    return args


def place_pool_on_real_nodes(pool: dict[str, Any]) -> dict[str, Any]:
    """A GenerationPool manifest whose workers run from the built worker image on the real
    nodes: warm on the on-demand one, cold on the spot one."""
    spec = pool.setdefault("spec", {})
    worker = spec.setdefault("worker", {})
    worker["image"] = image_ref("worker")
    worker["imagePullPolicy"] = "IfNotPresent"
    labels = worker.get("podLabels", {})
    labels.pop("imagegen.dev/local-runner", None)  # not the local pod runner's: the kubelet's
    if labels:
        worker["podLabels"] = labels
    else:
        worker.pop("podLabels", None)
    spec.setdefault("warm", {}).update(
        nodeSelector={REAL_NODE: "true", "imagegen.dev/capacity-type": "on-demand"},
        tolerations=[REAL_TOLERATION])
    spec.setdefault("cold", {}).update(
        nodeSelector={REAL_NODE: "true", "imagegen.dev/capacity-type": "spot"},
        tolerations=[REAL_TOLERATION, SPOT_TOLERATION])
    gateway = spec.get("gateway")
    if gateway and gateway.get("enabled"):
        # The gateway image, on the on-demand real node (no GPU needed; no CPU-only real node).
        gateway.update(image=image_ref("gateway"),
                       nodeSelector={REAL_NODE: "true", "imagegen.dev/capacity-type": "on-demand"},
                       tolerations=[REAL_TOLERATION])
    return pool
