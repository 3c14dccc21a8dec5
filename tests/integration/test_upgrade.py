"""`helm upgrade` from the previous release (issue 15): a GenerationPool created and reconciled by
the previous release's operator keeps working under the new one, and its workers are not
restarted by the upgrade.

The previous release is taken from this repository's own git history (`git archive` of
PREVIOUS: its chart, its CRDs and its operator code), so the test needs nothing outside the
repository. The dev pod runner runs the operator pods as local processes from the repository
root; the previous release's pods get its code first on PYTHONPATH through the chart's
`extraEnv` (the image a real previous release would run), the upgraded ones run this tree's.
The upgrade follows the README: CRDs applied server-side first, then `helm upgrade`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from imagegen_api import naming

from .conftest import Kubectl, StackEnv, apply_crds, unique, wait_for
from .test_install import CHART, GPU_POOL, ROOT, helm, remove_finalizers

pytestmark = pytest.mark.integration

# The last commit before issue 15 changed the chart, the CRDs and the operator (5cfc3a1 and
# after: tier-aware scaling, status hit rate, storage retention, monitoring objects). Pinned: the
# test is about upgrading from a release that differs from this tree, not from HEAD^.
PREVIOUS = "04d17577b33076c4ca78da0bc6406f86e7485738"
SETTLE_SECONDS = 12  # several reconcile passes of the new operator (pool pollSeconds 2)


def previous_release(dest: Path) -> Path:
    """PREVIOUS's charts/, crds/, api/ and operator/ unpacked under dest."""
    proc = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS,
                           "charts", "crds", "api", "operator"], capture_output=True, timeout=60)
    assert proc.returncode == 0, (
        f"git archive {PREVIOUS} failed (a shallow clone lacks the previous release; fetch "
        f"the history): {proc.stderr.decode(errors='replace')}")
    tar_path = dest / "previous.tar"
    tar_path.write_bytes(proc.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="tar")
    return dest


def get(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", *args, "-o", "json").stdout))


def operator_pods(kubectl: Kubectl, ns: str, release: str) -> dict[str, str]:
    """Running (not deleting) operator pods of the release: name -> uid."""
    items = get(kubectl, "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={release}")["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in items
            if not p["metadata"].get("deletionTimestamp")}


def workers(kubectl: Kubectl, ns: str, pool: str) -> dict[str, Any]:
    """What a needless rollout would change: the warm Deployment's template and generation,
    its ReplicaSets and its pods."""
    deploy = get(kubectl, "deployment", f"{pool}-warm", "-n", ns)
    rs = get(kubectl, "replicasets", "-n", ns)["items"]
    pods = get(kubectl, "pods", "-n", ns)["items"]
    owned_rs = sorted((r["metadata"]["name"], r["metadata"]["uid"]) for r in rs
                      if r["metadata"]["name"].startswith(f"{pool}-warm-"))
    return {
        "generation": deploy["metadata"]["generation"],
        "template": deploy["spec"]["template"],
        "replicasets": owned_rs,
        "pods": sorted((p["metadata"]["name"], p["metadata"]["uid"]) for p in pods
                       if p["metadata"]["name"].startswith(f"{pool}-warm-")
                       and not p["metadata"].get("deletionTimestamp")),
    }


def test_helm_upgrade_keeps_pool_and_workers(stack: StackEnv, kubectl: Kubectl) -> None:
    release = unique("igup")
    # Not under /tmp: the pod runner rewrites env values under the pod's volume mounts (/tmp is
    # an emptyDir of the operator pod), PYTHONPATH included.
    old = stack.state_dir / "previous-release" / release
    old.mkdir(parents=True)
    previous_release(old)
    install_ns, watched_ns = release, f"{release}-pools"
    pool = "gpu"
    common = ["--namespace", install_ns,
              "--set", "podLabels.imagegen\\.dev/local-runner=true", "--set", "ports.metrics=0",
              "--set", f"watchNamespaces={{{watched_ns}}}",
              "--set", f"kafka.bootstrapServers={stack.kafka_bootstrap}",
              "--set", f"redis.url={stack.redis_url}",
              "--set", f"s3.endpoint={stack.s3_endpoint}",
              "--set", "replicas=1", "--set", "leaderElection.enabled=false",
              "--wait", "--timeout", "90s"]
    # Relative to the pod's working directory (the repo root, dev/podrunner.py): an absolute
    # value under /tmp (a checkout in /tmp) would be taken for the pod's /tmp mount and rewritten.
    rel = Path(os.path.relpath(old, ROOT))
    old_code = json.dumps([{"name": "PYTHONPATH",
                            "value": f"{rel / 'operator'}:{rel / 'api'}"}])
    for ns in (install_ns, watched_ns):
        kubectl("create", "namespace", ns)
    installed = False
    try:
        # the previous release: its CRDs (cluster-wide; restored in `finally`), chart and code
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(old / "crds"))
        helm(stack, "install", release, str(old / "charts" / "imagegen-operator"), *common,
             "--set-json", f"extraEnv={old_code}")
        installed = True
        (old_pod,) = operator_pods(kubectl, install_ns, release)
        old_log = stack.state_dir / "logs" / "pods" / f"{install_ns}_{old_pod}.log"

        kubectl("create", "serviceaccount", "imagegen-worker", "-n", watched_ns)
        kubectl("apply", "-n", watched_ns, "-f",
                str(ROOT / "manifests" / "examples" / "tiny-model.yaml"))
        kubectl("apply", "-n", watched_ns, "-f", "-", input=GPU_POOL.format(name=pool))

        def status() -> dict[str, Any]:
            return dict(get(kubectl, "gp", pool, "-n", watched_ns).get("status") or {})

        def ready() -> dict[str, Any]:
            st = status()
            assert st.get("ready") == "1/1", st
            conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
            assert conds.get("Ready") == "True", st
            return st

        before_status = wait_for(ready, 90, "the previous release's pool status.ready 1/1")
        assert isinstance(before_status, dict)
        assert "cacheHitRate" not in before_status, "the previous release has no hit rate"
        assert f"{watched_ns}/{pool}:" in old_log.read_text(errors="replace"), \
            "the previous release's operator pod reconciled the pool"
        # let its passes settle, then take what a rollout would change
        time.sleep(SETTLE_SECONDS / 2)
        before = workers(kubectl, watched_ns, pool)
        assert len(before["pods"]) == 1 and len(before["replicasets"]) == 1, before

        # the upgrade, as the README says: CRDs first, then the chart (default extraEnv: []),
        # whose pod template changes, so the operator pod is replaced by one running this tree
        apply_crds(kubectl)
        helm(stack, "upgrade", release, str(CHART), *common)
        new_pods = wait_for(lambda: [n for n in operator_pods(kubectl, install_ns, release)
                                     if n != old_pod], 90, "the upgraded operator pod")
        assert isinstance(new_pods, list)
        assert len(new_pods) == 1, new_pods

        def reconciled_by_new() -> dict[str, Any]:
            # The operator logs a pool only when it changes something: the proof that this
            # tree's operator reconciles it is in the status, fields only this tree writes
            # (and only this tree's CRD keeps).
            st = ready()
            assert st.get("cacheHitRate") == "-" and "imagesPerHour" in st, st
            assert "oldestSecondsByTier" in st["queue"], st
            return st

        after_status = wait_for(reconciled_by_new, 90,
                                "the upgraded operator's status on the pool")
        assert isinstance(after_status, dict)
        gp = get(kubectl, "gp", pool, "-n", watched_ns)
        assert after_status["observedGeneration"] == gp["metadata"]["generation"]
        time.sleep(SETTLE_SECONDS)
        after = workers(kubectl, watched_ns, pool)
        # The one change an upgrade may make to the workers: a new worker config (new fields or
        # defaults in worker.json, whose hash the template carries) rolls them once, as the
        # workers read it at start. Everything else in the template stays as it was.
        hashes = [w["template"]["metadata"]["annotations"].pop(naming.ANNOTATION_CONFIG_HASH)
                  for w in (before, after)]
        assert after["template"] == before["template"], "the upgrade changed the pod template"
        if hashes[0] == hashes[1]:
            assert after["replicasets"] == before["replicasets"], "a new ReplicaSet: rolled"
            assert after["pods"] == before["pods"], "worker pods replaced"
            assert after["generation"] == before["generation"], "the Deployment was changed"
        else:
            assert len(after["replicasets"]) == 2 and after["generation"] == \
                before["generation"] + 1, "one rollout for the new worker config"
            wait_for(lambda: ready()["ready"] == "1/1", 120, "the rolled worker to be ready")
        assert ready()["ready"] == "1/1"

        kubectl("delete", "gp", pool, "-n", watched_ns, "--timeout=60s")
        kubectl("delete", "im", "tiny-sdxl", "-n", watched_ns, "--timeout=60s")
    finally:
        apply_crds(kubectl)  # the cluster's CRDs are this tree's again, whatever happened
        if installed:
            kubectl("scale", "deployment", "-n", install_ns, "-l",
                    f"app.kubernetes.io/instance={release}", "--replicas=0", check=False)
            kubectl("wait", "--for=delete", "pod", "-n", install_ns, "-l",
                    f"app.kubernetes.io/instance={release}", "--timeout=60s", check=False,
                    timeout=90)
            helm(stack, "uninstall", release, "--namespace", install_ns, "--wait",
                 "--timeout", "90s", check=False)
        for resource in ("generationpools.imagegen.dev", "imagemodels.imagegen.dev"):
            remove_finalizers(kubectl, watched_ns, resource)
        for ns in (install_ns, watched_ns):
            kubectl("delete", "namespace", ns, "--wait=false", check=False)
        shutil.rmtree(old, ignore_errors=True)
