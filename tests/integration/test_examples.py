"""`kubectl apply -f manifests/examples/` on the local stack (issue #3's "done when"): both example
pools reconcile and say, in kubectl terms, what they are doing.

The tiny pool runs real worker processes (local pod runner). The SDXL pool asks for a 20Gi cache
claim that no storage class here can provision: its workers wait (Pending) and the model says it
is prefetching — a platform engineer sees exactly why nothing serves yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.conftest import Kubectl, OperatorProcess, StackEnv, wait_for

ROOT = Path(__file__).resolve().parents[2]


def get(kubectl: Kubectl, ns: str, *args: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", "-n", ns, *args, "-o", "json").stdout))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def test_apply_examples_directory(kubectl: Kubectl, stack: StackEnv, operator: OperatorProcess,
                                  k8s_namespace: str) -> None:
    ns = k8s_namespace
    kubectl("create", "secret", "generic", "imagegen-s3", "-n", ns,
            f"--from-literal=AWS_ACCESS_KEY_ID={stack.s3_access_key}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={stack.s3_secret_key}")
    out = kubectl("apply", "-n", ns, "-f", str(ROOT / "manifests" / "examples")).stdout
    for name in ("imagemodel.imagegen.dev/tiny-sdxl", "generationpool.imagegen.dev/tiny",
                 "imagemodel.imagegen.dev/sdxl-base", "generationpool.imagegen.dev/sdxl"):
        assert name in out, out

    # The tiny pool: a real worker loaded the model.
    wait_for(lambda: get(kubectl, ns, "gp", "tiny").get("status", {}).get("ready") == "1/1",
             120, "the tiny pool's warm worker")
    # The SDXL model: prefetch Job created, waiting for its claim; not Ready, and says why.
    def sdxl_model_waits() -> bool:
        im = get(kubectl, ns, "im", "sdxl-base")
        return condition(im, "Ready").get("reason") == "Prefetching"
    wait_for(sdxl_model_waits, 30, "sdxl-base Ready=False reason Prefetching")
    assert get(kubectl, ns, "job", "sdxl-base-prefetch")["spec"]["template"]["spec"][
        "volumes"][0]["persistentVolumeClaim"]["claimName"] == "sdxl-weights"
    # The SDXL pool: two warm workers desired (warm.minReplicas 2), Pending on the unbound claim.
    def sdxl_pool_waits() -> bool:
        gp = get(kubectl, ns, "gp", "sdxl")
        return ("Pending for a node" in condition(gp, "Ready").get("message", "")
                and gp["status"]["warm"]["desired"] == 2)
    wait_for(sdxl_pool_waits, 30, "sdxl pool Ready=False naming its Pending workers")

    table = kubectl("get", "imagegen", "-n", ns).stdout
    assert "tiny-sdxl" in table and "sdxl-base" in table
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert rows["generationpool.imagegen.dev/tiny"][2] == "1/1"
    assert rows["generationpool.imagegen.dev/sdxl"][2] == "0/2"
