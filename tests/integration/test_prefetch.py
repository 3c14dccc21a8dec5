"""ImageModel prefetch on the real control plane: the operator creates the cache claim and a Job
running the worker image's `prefetch` command, and reports CACHED from the Job's outcome.

KWOK completes Job pods without running them (the download itself is tested for real in
tests/integration/test_model_sources.py and tests/unit/worker/test_prefetch.py); here it is the
operator's side: claim, Job spec, status, and replacing the Job when the spec changes.
"""

from __future__ import annotations

import json
from typing import Any

from tests.integration.conftest import Kubectl, OperatorProcess, unique, wait_for

MODEL = """
apiVersion: imagegen.dev/v1alpha1
kind: ImageModel
metadata: {{name: {name}}}
spec:
  source: s3://weights/sdxl
  revision: "{revision}"
  prefetch: {{claimName: {claim}, size: 1Gi, storageClassName: manual}}
"""

VOLUME = """
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteMany]
  storageClassName: manual
  hostPath: {{path: /tmp/{name}}}
  claimRef: {{namespace: {namespace}, name: {claim}}}
"""


def get(kubectl: Kubectl, ns: str, *args: str) -> Any:
    proc = kubectl("get", "-n", ns, *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_prefetch_job_claim_and_cached_status(kubectl: Kubectl, operator: OperatorProcess,
                                              k8s_namespace: str) -> None:
    ns, name, claim = k8s_namespace, "sdxl", "weights"
    volume = unique("pv")
    kubectl("apply", "-f", "-", input=VOLUME.format(name=volume, namespace=ns, claim=claim))
    try:
        kubectl("apply", "-n", ns, "-f", "-",
                input=MODEL.format(name=name, claim=claim, revision="v1"))
        pvc = wait_for(lambda: get(kubectl, ns, "pvc", claim), 30, "the cache claim")
        assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"  # type: ignore[index]
        # Warm and cold workers on different nodes mount it: ReadWriteMany by default.
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # type: ignore[index]

        job = wait_for(lambda: get(kubectl, ns, "job", f"{name}-prefetch"), 30, "prefetch Job")
        container = job["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
        assert container["command"][:4] == ["imagegen-worker", "prefetch", "--model", name]
        assert json.loads(container["command"][5])["source"] == "s3://weights/sdxl"
        mounts = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}  # type: ignore[index]
        assert mounts["model-cache"]["persistentVolumeClaim"]["claimName"] == claim

        def cached() -> str:
            st = (get(kubectl, ns, "im", name) or {}).get("status") or {}
            return str(st.get("cached")) if st.get("cached") == "Ready" else ""
        wait_for(cached, 90, "CACHED=Ready after the Job completed")
        columns = kubectl("get", "im", name, "-n", ns).stdout.splitlines()[1].split()
        assert columns[:5] == [name, "sdxl", "s3://weights/sdxl", "true", "Ready"]

        # A changed spec (new revision) gets a new Job for the new weights.
        uid = job["metadata"]["uid"]  # type: ignore[index]
        kubectl("apply", "-n", ns, "-f", "-",
                input=MODEL.format(name=name, claim=claim, revision="v2"))
        wait_for(lambda: (j := get(kubectl, ns, "job", f"{name}-prefetch"))
                 and j["metadata"]["uid"] != uid, 40, "a new prefetch Job for the new spec")
        events = kubectl("get", "events", "-n", ns, "--field-selector",
                         f"involvedObject.name={name},reason=Prefetch").stdout
        assert "older spec; replaced" in events
    finally:
        kubectl("delete", "pv", volume, "--wait=false", check=False)
