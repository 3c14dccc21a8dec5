"""The Helm chart and the kustomize base against the real API server of the local stack:
`helm lint`, server-side dry-run applies of both, and the chart (default values) vs
manifests/install consistency check; and one real `helm install` whose operator pods the dev pod
runner starts as local processes with their ServiceAccount's token (so its RBAC is the real one)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Kubectl, StackEnv, unique, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "imagegen-operator"
INSTALL = ROOT / "manifests" / "install"
RELEASE = "imagegen-operator"
INSTALL_NAMESPACE = "imagegen-system"
LEADER_ROLE = f"{RELEASE}-leader-election"


def helm(stack: StackEnv, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([stack.helm_bin, *args], capture_output=True, text=True, timeout=180,
                          env={**stack.env, "KUBECONFIG": stack.kubeconfig,
                               "HELM_CACHE_HOME": str(stack.state_dir / "helm" / "cache"),
                               "HELM_CONFIG_HOME": str(stack.state_dir / "helm" / "config"),
                               "HELM_DATA_HOME": str(stack.state_dir / "helm" / "data")})
    assert proc.returncode == 0 or not check, \
        f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def docs_of(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(stack: StackEnv, namespace: str = INSTALL_NAMESPACE, *values: str,
           hooks: bool = True) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace, "--include-crds"]
    if not hooks:
        args.append("--no-hooks")
    for v in values:
        args += ["--set", v]
    return docs_of(helm(stack, *args).stdout)


def key(doc: dict[str, Any]) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), meta["name"]


def dry_run_apply(kubectl: Kubectl, docs: list[dict[str, Any]]) -> str:
    """Server-side dry-run of every object."""
    out = kubectl("apply", "--dry-run=server", "-f", "-",
                  input=yaml.safe_dump_all(docs, sort_keys=False)).stdout
    for doc in docs:
        kind, _, name = key(doc)
        assert kind.lower() in out.lower() and name in out, f"{kind}/{name} not applied:\n{out}"
    return out


def test_helm_lint_is_clean(stack: StackEnv) -> None:
    options = ["--set", "watchNamespaces={a,b}", "--set", "workerServiceAccount.create=true",
               "--set", "kafka.existingSecret=kafka", "--set", "s3.credentialsSecret=s3",
               "--set", "networkPolicy.enabled=true", "--set", "redis.workerSecret=redis",
               "--set", "worker.allowedImages={registry.internal/imagegen/}"]
    standalone = ["--set", "leaderElection.enabled=false", "--set", "replicas=1"]
    for extra in ([], options, standalone):
        out = helm(stack, "lint", "--strict", str(CHART), *extra).stdout
        assert "[ERROR]" not in out and "[WARNING]" not in out, out
        assert "0 chart(s) failed" in out, out


def test_chart_defaults_render_the_expected_objects(stack: StackEnv) -> None:
    docs = render(stack)
    kinds = {(k, n) for k, _, n in map(key, docs)}
    for expected in [("ServiceAccount", RELEASE), ("ClusterRole", RELEASE),
                     ("ClusterRoleBinding", RELEASE), ("Deployment", RELEASE),
                     ("Service", f"{RELEASE}-metrics"), ("Role", LEADER_ROLE),
                     ("RoleBinding", LEADER_ROLE)]:
        assert expected in kinds, expected
    crds = {n for k, n in kinds if k == "CustomResourceDefinition"}
    assert crds == {"imagemodels.imagegen.dev", "generationpools.imagegen.dev"}, \
        "the chart's crds/ (symlink to the repo's crds/) holds both CRDs, and no Kopf peering CRD"
    assert not any(k == "ServiceAccount" and n == "imagegen-worker" for k, n in kinds)
    assert not any(k == "NetworkPolicy" for k, n in kinds), "NetworkPolicies are opt-in"
    assert not any("hook" in str(d["metadata"].get("annotations")) for d in docs), "no hooks"
    # leader election: the Lease only, in the release namespace
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == INSTALL_NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": [RELEASE], "verbs": ["get", "update"]}]
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert not any("kopf.dev" in r["apiGroups"] or "coordination.k8s.io" in r["apiGroups"]
                   for r in cluster_role["rules"])
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] == 2
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "imagegen_operator"]
    env = {e["name"]: e for e in container["env"]}
    assert env["IMAGEGEN_LEASE_NAME"]["value"] == RELEASE
    assert (env["IMAGEGEN_LEASE_DURATION_SECONDS"]["value"],
            env["IMAGEGEN_LEASE_RENEW_DEADLINE_SECONDS"]["value"],
            env["IMAGEGEN_LEASE_RETRY_PERIOD_SECONDS"]["value"]) == ("15", "10", "2")
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert "IMAGEGEN_OPERATOR_STANDALONE" not in env and "IMAGEGEN_OPERATOR_PEERING" not in env
    assert "IMAGEGEN_ALLOWED_IMAGES" not in env and "IMAGEGEN_REDIS_URL_SECRET" not in env
    assert "IMAGEGEN_WATCH_NAMESPACES" not in env, "cluster-wide by default"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "health": 8080, "metrics": 9090}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 10001


def test_chart_values_wire_into_the_pod(stack: StackEnv) -> None:
    docs = render(stack, "ns1", "watchNamespaces={ns1,ns2}", "kafka.existingSecret=kafka-conn",
                  "kafka.key=bootstrap", "redis.url=redis://r:6379/0",
                  "s3.endpoint=http://s3:9000", "s3.credentialsSecret=s3-creds",
                  "podLabels.imagegen\\.dev/local-runner=true", "workerServiceAccount.create=true",
                  "nodeSelector.pool=system", "redis.workerSecret=imagegen-redis",
                  "worker.allowedImages={registry.internal/imagegen/,ghcr.io/acme}",
                  "leaderElection.leaseName=igop", "leaderElection.leaseDurationSeconds=30",
                  "leaderElection.renewDeadlineSeconds=20", "leaderElection.retryPeriodSeconds=4")
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]
    assert pod["metadata"]["labels"]["imagegen.dev/local-runner"] == "true"
    assert set(deploy["spec"]["selector"]["matchLabels"].items()) <= set(
        pod["metadata"]["labels"].items())
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["IMAGEGEN_WATCH_NAMESPACES"]["value"] == "ns1,ns2"
    assert env["IMAGEGEN_KAFKA_BOOTSTRAP"]["valueFrom"]["secretKeyRef"] == {
        "name": "kafka-conn", "key": "bootstrap"}
    assert env["IMAGEGEN_REDIS_URL"]["value"] == "redis://r:6379/0"
    assert env["IMAGEGEN_S3_ENDPOINT"]["value"] == "http://s3:9000"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    # workers read the default Redis URL from a Secret in their namespace, by secretKeyRef
    assert env["IMAGEGEN_REDIS_URL_SECRET"]["value"] == "imagegen-redis"
    assert env["IMAGEGEN_REDIS_URL_SECRET_KEY"]["value"] == "url"
    assert env["IMAGEGEN_ALLOWED_IMAGES"]["value"] == "registry.internal/imagegen/,ghcr.io/acme"
    assert (env["IMAGEGEN_LEASE_NAME"]["value"], env["IMAGEGEN_LEASE_DURATION_SECONDS"]["value"],
            env["IMAGEGEN_LEASE_RENEW_DEADLINE_SECONDS"]["value"],
            env["IMAGEGEN_LEASE_RETRY_PERIOD_SECONDS"]["value"]) == ("igop", "30", "20", "4")
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == "ns1"
    assert role["rules"][1]["resourceNames"] == ["igop"]
    worker_sa = next(d for d in docs if d["kind"] == "ServiceAccount"
                     and d["metadata"]["name"] == "imagegen-worker")
    assert worker_sa["automountServiceAccountToken"] is False
    bound = [s["name"] for d in docs if d["kind"] == "ClusterRoleBinding" for s in d["subjects"]]
    assert "imagegen-worker" not in bound


def test_chart_dry_run_apply(stack: StackEnv, kubectl: Kubectl, k8s_namespace: str) -> None:
    dry_run_apply(kubectl, render(stack, k8s_namespace))
    # non-default values too: secrets, worker ServiceAccount, pod labels, NetworkPolicies
    dry_run_apply(kubectl, render(stack, k8s_namespace, f"watchNamespaces={{{k8s_namespace}}}",
                                  "kafka.existingSecret=kafka", "s3.credentialsSecret=s3",
                                  "workerServiceAccount.create=true",
                                  "podLabels.imagegen\\.dev/local-runner=true",
                                  "networkPolicy.enabled=true", "redis.workerSecret=redis"))
    # one replica without leader election
    dry_run_apply(kubectl, render(stack, k8s_namespace, "leaderElection.enabled=false",
                                  "replicas=1"))


def test_chart_without_leader_election_runs_one_replica(stack: StackEnv) -> None:
    docs = render(stack, INSTALL_NAMESPACE, "leaderElection.enabled=false", "replicas=1")
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["IMAGEGEN_OPERATOR_STANDALONE"]["value"] == "1"
    assert "IMAGEGEN_LEASE_NAME" not in env
    assert not any(d["kind"] in ("Role", "RoleBinding") for d in docs)
    # two replicas without a Lease would both act: refused at render time
    proc = helm(stack, "template", RELEASE, str(CHART), "--set", "leaderElection.enabled=false",
                check=False)
    assert proc.returncode != 0
    assert "leaderElection.enabled=false" in proc.stderr and "replicas must be 1" in proc.stderr


def test_chart_network_policies(stack: StackEnv) -> None:
    docs = render(stack, "ops", "networkPolicy.enabled=true", "watchNamespaces={ns1,ns2}",
                  "networkPolicy.monitoringNamespace=prom")
    policies = {(d["metadata"]["namespace"], d["metadata"]["name"]): d["spec"] for d in docs
                if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {("ops", RELEASE), ("ns1", f"{RELEASE}-workers"),
                             ("ns2", f"{RELEASE}-workers")}
    prom = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prom"}}}
    op = policies[("ops", RELEASE)]
    assert op["policyTypes"] == ["Ingress"]
    assert op["ingress"] == [{"from": [prom], "ports": [{"protocol": "TCP", "port": 9090}]}]
    workers = policies[("ns1", f"{RELEASE}-workers")]
    assert workers["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "imagegen-worker",
        "app.kubernetes.io/managed-by": "imagegen-operator"}
    (rule,) = workers["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert rule["from"][0] == prom
    operator_peer = rule["from"][1]
    assert operator_peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ops"}
    assert operator_peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    # explicit worker namespaces win over watchNamespaces
    docs = render(stack, "ops", "networkPolicy.enabled=true", "watchNamespaces={ns1}",
                  "networkPolicy.workerNamespaces={teams-a}")
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] == "NetworkPolicy"} == {
        "ops", "teams-a"}


# --- chart defaults == manifests/install -----------------------------------------------------


def kustomize(kubectl: Kubectl, path: Path = INSTALL) -> list[dict[str, Any]]:
    return docs_of(kubectl("kustomize", str(path)).stdout)


def tool_free(labels: dict[str, str]) -> dict[str, str]:
    """Labels without those naming the installing tool (Helm vs kustomize)."""
    return {k: v for k, v in labels.items()
            if k not in ("helm.sh/chart", "app.kubernetes.io/managed-by")}


def container_shape(deploy: dict[str, Any]) -> dict[str, Any]:
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    return {
        "replicas": deploy["spec"]["replicas"],
        "selector": deploy["spec"]["selector"],
        "serviceAccountName": pod["serviceAccountName"],
        "podSecurityContext": pod["securityContext"],
        "volumes": pod.get("volumes"),
        "image": c["image"],
        "command": c["command"],
        "args": c.get("args"),
        "env": c["env"],
        "ports": c["ports"],
        "probes": (c["livenessProbe"], c["readinessProbe"]),
        "resources": c["resources"],
        "securityContext": c["securityContext"],
        "volumeMounts": c.get("volumeMounts"),
    }


def test_kustomize_base_equals_chart_defaults(stack: StackEnv, kubectl: Kubectl) -> None:
    chart = render(stack, INSTALL_NAMESPACE, hooks=False)
    base = kustomize(kubectl)
    by_chart = {key(d): d for d in chart}
    by_base = {key(d): d for d in base}
    # the base adds its Namespace; everything else is the chart's non-hook objects
    assert set(by_base) - set(by_chart) == {("Namespace", "", INSTALL_NAMESPACE)}
    assert set(by_chart) - set(by_base) == set()
    for k, doc in by_chart.items():
        other = by_base[k]
        assert other["apiVersion"] == doc["apiVersion"], k
        if k[0] == "CustomResourceDefinition":
            assert other["spec"] == doc["spec"], f"{k}: CRD differs from the chart's"
        elif k[0] in ("ClusterRole", "Role"):
            assert other["rules"] == doc["rules"], f"{k[0]} rules differ"
        elif k[0] in ("ClusterRoleBinding", "RoleBinding"):
            assert (other["roleRef"], other["subjects"]) == (doc["roleRef"], doc["subjects"])
        elif k[0] == "Deployment":
            assert container_shape(other) == container_shape(doc), "Deployment differs"
            assert tool_free(other["spec"]["template"]["metadata"]["labels"]) == \
                tool_free(doc["spec"]["template"]["metadata"]["labels"])
        elif k[0] == "Service":
            assert other["spec"] == doc["spec"], "Service differs"
        elif k[0] == "ServiceAccount":
            assert other.get("automountServiceAccountToken") == \
                doc.get("automountServiceAccountToken")
    assert not (INSTALL / "peering").exists(), "no Kopf peering objects any more"


def test_kustomize_crds_are_the_repo_crds(kubectl: Kubectl) -> None:
    repo = {d["metadata"]["name"]: d for p in sorted((ROOT / "crds").glob("*.yaml"))
            for d in docs_of(p.read_text()) if d.get("kind") == "CustomResourceDefinition"}
    base = {d["metadata"]["name"]: d for d in kustomize(kubectl)
            if d["kind"] == "CustomResourceDefinition"}
    assert repo and set(repo) <= set(base)
    for name, doc in repo.items():
        assert base[name]["spec"] == doc["spec"], name


def test_kustomize_dry_run_apply(kubectl: Kubectl) -> None:
    # Namespaced objects can only be dry-run created into a namespace that exists.
    if kubectl("get", "namespace", INSTALL_NAMESPACE, check=False).returncode != 0:
        kubectl("create", "namespace", INSTALL_NAMESPACE)
    out = kubectl("apply", "--dry-run=server", "-k", str(INSTALL)).stdout
    for doc in kustomize(kubectl):
        kind, _, name = key(doc)
        assert name in out, f"{kind}/{name} not in:\n{out}"


# --- a real install --------------------------------------------------------------------------

GPU_POOL = """
apiVersion: imagegen.dev/v1alpha1
kind: GenerationPool
metadata: {{name: {name}}}
spec:
  models: [tiny-sdxl]
  warm: {{minReplicas: 1, maxReplicas: 1}}
  cold: {{maxReplicas: 0}}
  queue: {{partitions: 1}}
  autoscaling: {{pollSeconds: 2}}
"""


def remove_finalizers(kubectl: Kubectl, ns: str, resource: str) -> None:
    """Last resort in cleanup: objects the (gone) operator still holds a finalizer on."""
    names = kubectl("get", resource, "-n", ns, "-o", "name", check=False).stdout.split()
    for name in names:
        kubectl("patch", name, "-n", ns, "--type=merge", "-p",
                '{"metadata":{"finalizers":null}}', check=False)


def test_helm_install_reconciles_example_pool(stack: StackEnv, kubectl: Kubectl) -> None:
    """`helm install`, the operator pod run as a local process through the pod runner (pod label
    imagegen.dev/local-runner), watching only its own second namespace: the example model and a
    GPU pool there get their children and a Ready status, and the operator's own pod log shows
    that it handled the pool. The processes talk to the API server with the operator
    ServiceAccount's token, so this is the chart's RBAC at work, not an admin kubeconfig.

    Other operators may run cluster-wide at the same time (the session's `operator` fixture is
    standalone and cluster-wide) and reconcile the same pool: the children and status alone prove
    little, so the pool log of *this* release's pods is checked too.

    The chart's default two replicas: exactly one of them (the Lease holder, with the Role's
    rights only) handles the pool; the other's log says it is a standby."""
    started = time.monotonic()
    release = unique("igop")
    install_ns, watched_ns = release, f"{release}-pools"
    pool = "gpu"
    for ns in (install_ns, watched_ns):
        kubectl("create", "namespace", ns)
    installed = False
    try:
        helm(stack, "install", release, str(CHART), "--namespace", install_ns,
             "--set", "podLabels.imagegen\\.dev/local-runner=true",
             # Local processes share the host's ports: the runner rewrites IMAGEGEN_HTTP_PORT,
             # and metrics port 0 lets each process bind a free one.
             "--set", "ports.metrics=0",
             "--set", f"watchNamespaces={{{watched_ns}}}",
             "--set", f"kafka.bootstrapServers={stack.kafka_bootstrap}",
             "--set", f"redis.url={stack.redis_url}",
             "--set", f"s3.endpoint={stack.s3_endpoint}",
             "--wait", "--timeout", "90s")
        installed = True
        installed_at = time.monotonic()
        pods = json.loads(kubectl("get", "pods", "-n", install_ns, "-l",
                                  f"app.kubernetes.io/instance={release}", "-o", "json").stdout)
        names = [p["metadata"]["name"] for p in pods["items"]]
        assert len(names) == 2, names
        for p in pods["items"]:
            assert p["spec"]["serviceAccountName"] == release + "-imagegen-operator"
        # --wait saw the Deployment available; the pod runner's Ready condition can flap for a
        # moment afterwards (KWOK re-applying a stage), so wait for it rather than read it once.
        kubectl("wait", "--for=condition=Ready", "pod", "-n", install_ns, "-l",
                f"app.kubernetes.io/instance={release}", "--timeout=30s", timeout=45)
        # one of the two holds the Lease (named after the release) in the release namespace
        lease = f"{release}-imagegen-operator"

        def lease_holder() -> str:
            obj = json.loads(kubectl("get", "lease", lease, "-n", install_ns, "-o",
                                     "json", check=False).stdout or "{}")
            return str((obj.get("spec") or {}).get("holderIdentity") or "")

        holder = wait_for(lease_holder, 60, f"Lease {install_ns}/{lease} held")
        assert holder in names, (holder, names)

        # worker pods run as this account; the chart makes it only in its own namespace
        kubectl("create", "serviceaccount", "imagegen-worker", "-n", watched_ns)
        kubectl("apply", "-n", watched_ns, "-f",
                str(ROOT / "manifests" / "examples" / "tiny-model.yaml"))
        kubectl("apply", "-n", watched_ns, "-f", "-", input=GPU_POOL.format(name=pool))
        applied_at = time.monotonic()

        def ready_status() -> dict[str, Any]:
            st = json.loads(kubectl("get", "gp", pool, "-n", watched_ns, "-o",
                                    "json").stdout).get("status") or {}
            assert st.get("ready") == "1/1", st
            return dict(st)

        wait_for(lambda: kubectl("get", "deployment", f"{pool}-warm", "-n", watched_ns,
                                 check=False).returncode == 0 and ready_status(),
                 60, f"Deployment {pool}-warm and GenerationPool status.ready 1/1")
        reconciled_at = time.monotonic()

        logs = {n: stack.state_dir / "logs" / "pods" / f"{install_ns}_{n}.log" for n in names}

        def handled() -> list[str]:
            text = {n: p.read_text(errors="replace") if p.exists() else ""
                    for n, p in logs.items()}
            return [n for n, t in text.items() if f"{watched_ns}/{pool}:" in t]

        wait_for(handled, 30, f"a line about {watched_ns}/{pool} in {sorted(logs.values())}")
        assert handled() == [holder], "exactly one replica, the Lease holder, acts"
        for n, path in logs.items():
            text = path.read_text(errors="replace")
            # started by the runner with the pod's ServiceAccount token, watching one namespace
            assert "forbidden" not in text.lower(), f"{n} hit RBAC:\n{text[-3000:]}"
            if n == holder:
                assert "imagegen-operator started" in text, f"{n}:\n{text[-3000:]}"
                assert f"{n} acquired Lease {install_ns}/{lease}" in text, text[-3000:]
            else:
                assert "imagegen-operator started" not in text, f"{n} acts too:\n{text[-3000:]}"
                assert f"standby, Lease {install_ns}/{lease} held by {holder}" in text, \
                    f"{n}:\n{text[-3000:]}"
        print(f"\ninstall {installed_at - started:.1f}s, pool ready "
              f"{reconciled_at - applied_at:.1f}s after apply")

        # clean up while the operator still runs: it holds finalizers on both objects
        kubectl("delete", "gp", pool, "-n", watched_ns, "--timeout=60s")
        kubectl("delete", "im", "tiny-sdxl", "-n", watched_ns, "--timeout=60s")
    finally:
        if installed:
            # Stop the operator before `helm uninstall` takes its RBAC and ServiceAccount away:
            # otherwise it cannot release its Lease while it shuts down.
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
