"""Install files without servers: Dockerfile rules, the Helm chart's static parts, RBAC shape and
the kustomize base. The rendered-chart vs kustomize comparison on a real API server lives in
tests/integration/test_install.py."""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "imagegen-operator"
INSTALL = ROOT / "manifests" / "install"
DOCKERFILES = ("Dockerfile.operator", "Dockerfile.worker")

# --- a small Dockerfile rule checker ---------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str  # upper case
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and heredoc bodies (<<'EOF' ... EOF) skipped."""
    out: list[Instruction] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        raw = lines[i].strip()
        i += 1
        if not raw or raw.startswith("#"):
            continue
        parts = [raw]
        while parts[-1].endswith("\\") and i < len(lines):
            parts[-1] = parts[-1][:-1]
            nxt = lines[i].strip()
            i += 1
            if nxt.startswith("#"):
                parts.append("\\")  # a comment inside a continuation keeps the line going
                continue
            parts.append(nxt)
        logical = " ".join(p for p in parts if p != "\\").strip()
        for marker in re.findall(r"<<-?['\"]?(\w+)['\"]?", logical):
            while i < len(lines) and lines[i].strip() != marker:
                i += 1
            i += 1
        keyword, _, args = logical.partition(" ")
        out.append(Instruction(start + 1, keyword.upper(), args.strip()))
    return out


def _exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def from_images(ins: list[Instruction]) -> list[tuple[int, str]]:
    """(line, image) of each FROM, with `${NAME}` / `$NAME` replaced by the default of an ARG
    declared before the first FROM (the only ARGs a FROM can use); no default: left as is."""
    first_from = next((i.line for i in ins if i.keyword == "FROM"), None)
    defaults: dict[str, str] = {}
    for i in ins:
        if i.keyword == "ARG" and (first_from is None or i.line < first_from):
            name, sep, value = i.args.partition("=")
            if sep:
                defaults[name.strip()] = value.strip().strip("\"'")
    out = []
    for f in ins:
        if f.keyword != "FROM":
            continue
        image = next((w for w in f.args.split() if not w.startswith("--")), "")
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                       lambda m: defaults.get(m[1] or m[2], m[0]), image)
        out.append((f.line, image))
    return out


def lint_dockerfile(text: str) -> list[str]:
    """Rule violations of one Dockerfile (empty list: clean)."""
    problems: list[str] = []
    ins = parse_dockerfile(text)
    froms = from_images(ins)
    if not froms:
        problems.append("no FROM")
    for line, image in froms:
        name, _, digest = image.partition("@")
        tag = name.rsplit("/", 1)[-1].partition(":")[2]
        if not digest and (not tag or tag == "latest" or "$" in image):
            problems.append(f"line {line}: base image {image!r} is not pinned by a tag "
                            f"(or digest) other than latest")
    users = [i for i in ins if i.keyword == "USER"]
    if not users:
        problems.append("no USER: the image would run as root")
    else:
        uid = users[-1].args.split(":", 1)[0]
        if not uid.isdigit() or int(uid) == 0:
            problems.append(f"line {users[-1].line}: USER {users[-1].args!r} is not a numeric "
                            f"non-root uid (runAsNonRoot needs a number)")
    for i in ins:
        if i.keyword == "ADD" and re.search(r"(^|\s)(https?|git)(://|@)", i.args):
            problems.append(f"line {i.line}: ADD of a remote URL (unpinned, unverified)")
    entry = [i for i in ins if i.keyword == "ENTRYPOINT"]
    if not entry:
        problems.append("no ENTRYPOINT")
    elif _exec_form(entry[-1].args) is None:
        problems.append(f"line {entry[-1].line}: ENTRYPOINT is not in exec (JSON array) form: "
                        f"signals would go to a shell, not the process")
    copies = [i for i in ins if i.keyword == "COPY"]
    dep_copy = next((n for n, c in enumerate(copies) if "pyproject.toml" in c.args.split()), None)
    src_copy = next((n for n, c in enumerate(copies)
                     if re.search(r"(^|\s)(\.|api|operator|worker)(/\S*)?\s", c.args + " ")
                     and "pyproject.toml" not in c.args.split()), None)
    if dep_copy is None:
        problems.append("pyproject.toml is never copied on its own (dependency layer)")
    elif src_copy is None or src_copy < dep_copy:
        problems.append("the source is copied before pyproject.toml: every source change "
                        "reinstalls all dependencies")
    else:
        first_src_line = copies[src_copy].line
        if not any(i.keyword == "RUN" and "pip install" in i.args
                   and copies[dep_copy].line < i.line < first_src_line for i in ins):
            problems.append("no `pip install` of the dependencies between copying pyproject.toml "
                            "and copying the source")
    return problems


def dockerignore_patterns() -> set[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return {ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")}


# --- the checker catches what it should ------------------------------------------------------

GOOD = """\
FROM python:3.11.11-slim-bookworm
COPY pyproject.toml ./
RUN pip install -r req.txt \\
 && true
COPY api ./api
RUN pip install --no-deps .
USER 10001
ENTRYPOINT ["python", "-m", "x"]
"""


@pytest.mark.parametrize(("bad", "needle"), [
    (GOOD.replace("python:3.11.11-slim-bookworm", "python:latest"), "not pinned"),
    (GOOD.replace("python:3.11.11-slim-bookworm", "python"), "not pinned"),
    ("ARG BASE_IMAGE\n" + GOOD.replace("python:3.11.11-slim-bookworm", "${BASE_IMAGE}"),
     "not pinned"),
    ("ARG BASE_IMAGE=python:latest\n"
     + GOOD.replace("python:3.11.11-slim-bookworm", "${BASE_IMAGE}"), "not pinned"),
    (GOOD.replace("USER 10001", "USER root"), "non-root"),
    (GOOD.replace("USER 10001\n", ""), "no USER"),
    (GOOD.replace('["python", "-m", "x"]', "python -m x"), "exec"),
    (GOOD + "ADD https://example.com/x.tgz /x\n", "ADD of a remote URL"),
    (GOOD.replace("COPY pyproject.toml ./\n", "").replace("COPY api", "COPY . .\nCOPY api"),
     "never copied"),
    (GOOD.replace("COPY pyproject.toml ./\n", "COPY api ./api\nCOPY pyproject.toml ./\n"),
     "before pyproject"),
])
def test_dockerfile_checker_flags(bad: str, needle: str) -> None:
    problems = lint_dockerfile(bad)
    assert any(needle in p for p in problems), problems


def test_dockerfile_checker_resolves_the_base_image_argument() -> None:
    """A base taken as a build argument is checked by its default: the production base."""
    text = ("ARG BASE_IMAGE=python:3.11.11-slim-bookworm\n"
            + GOOD.replace("python:3.11.11-slim-bookworm", "${BASE_IMAGE}"))
    assert lint_dockerfile(text) == []
    assert from_images(parse_dockerfile(text)) == [(2, "python:3.11.11-slim-bookworm")]


def test_dockerfile_checker_accepts_good_and_skips_heredocs() -> None:
    text = GOOD.replace("RUN pip install -r req.txt", "RUN python - > r.txt <<'PY'\n"
                        "FROM evil:latest\nPY\nRUN pip install -r req.txt")
    assert lint_dockerfile(text) == []
    assert [i.keyword for i in parse_dockerfile(text)].count("FROM") == 1


# --- the project's Dockerfiles ---------------------------------------------------------------


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_rules(name: str) -> None:
    assert lint_dockerfile((ROOT / name).read_text()) == []


def _entrypoint(name: str) -> list[str] | None:
    ins = parse_dockerfile((ROOT / name).read_text())
    return _exec_form([i for i in ins if i.keyword == "ENTRYPOINT"][-1].args)


def test_operator_dockerfile_contract() -> None:
    ins = parse_dockerfile((ROOT / "Dockerfile.operator").read_text())
    assert _entrypoint("Dockerfile.operator") == ["python", "-m", "imagegen_operator"]
    froms = [image for _, image in from_images(ins)]
    assert froms[-1].startswith("python:3.11")
    exposed = {p for i in ins if i.keyword == "EXPOSE" for p in i.args.split()}
    assert {"8080", "9090"} <= exposed
    assert not any(i.keyword == "HEALTHCHECK" for i in ins), "Kubernetes probes /healthz"
    assert [i.args for i in ins if i.keyword == "USER"][-1].split(":")[0] == "10001"


def test_worker_dockerfile_contract() -> None:
    text = (ROOT / "Dockerfile.worker").read_text()
    ins = parse_dockerfile(text)
    assert _entrypoint("Dockerfile.worker") == ["imagegen-worker"]
    assert any(i.keyword == "VOLUME" and "/models" in i.args for i in ins)
    env = " ".join(i.args for i in ins if i.keyword == "ENV")
    assert re.search(r"(^|\s)IMAGEGEN_MODEL_CACHE=/models(\s|$)", env)
    assert [i.args for i in ins if i.keyword == "USER"][-1].split(":")[0] == "10001"
    assert "python -m imagegen_worker.prefetch" in text, "the prefetch entry point is documented"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[=<>!~ \[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def _installs_before_source(name: str) -> list[str]:
    """The `pip install` arguments of the RUNs between copying pyproject.toml and the source."""
    ins = parse_dockerfile((ROOT / name).read_text())
    copies = [i for i in ins if i.keyword == "COPY"]
    dep = next(c.line for c in copies if "pyproject.toml" in c.args.split())
    src = next(c.line for c in copies if c.line > dep)
    return [i.args for i in ins if i.keyword == "RUN" and dep < i.line < src
            and "pip install" in i.args]


@pytest.mark.parametrize(("name", "extra"), [("Dockerfile.operator", "operator"),
                                             ("Dockerfile.worker", "worker")])
def test_images_install_their_extra_from_pyproject(name: str, extra: str) -> None:
    """No hand-kept requirement list in a Dockerfile: each image installs `.[<its extra>]`."""
    runs = _installs_before_source(name)
    assert any(f"'.[{extra}]'" in r or f'".[{extra}]"' in r for r in runs), runs
    assert "tomllib" not in (ROOT / name).read_text()


def test_operator_image_installs_pinned_operator_deps_only() -> None:
    """The operator image's requirements (base + [operator]) are pinned and never torch."""
    project = _pyproject()["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["operator"]
    assert all("==" in r for r in reqs)
    names = _names(reqs)
    assert {"kopf", "kubernetes-asyncio", "pydantic"} <= names
    assert not names & {"torch", "diffusers", "transformers"}


def test_base_install_is_the_client_only() -> None:
    """`pip install imagegen-operator`: the contract and the client, no GPU stack, no kopf."""
    project = _pyproject()["project"]
    names = _names(project["dependencies"])
    assert names == {"pydantic", "aiokafka", "redis", "aiohttp"}
    assert project["scripts"]["imagegen"] == "imagegen_client.cli:main"
    extras = project["optional-dependencies"]
    assert {"torch", "diffusers", "transformers", "boto3"} <= _names(extras["worker"])
    assert not _names(extras["operator"]) & {"torch", "diffusers", "transformers", "boto3"}
    assert all("==" in r for group in extras.values() for r in group)
    setup = (ROOT / "dev" / "setup").read_text()
    assert "-e '.[operator,worker,gateway,dev]'" in setup


def test_dockerignore_excludes_local_state() -> None:
    patterns = dockerignore_patterns()
    assert {".venv", ".stack", ".git"} <= patterns
    assert {"out"} <= patterns
    assert any("__pycache__" in p for p in patterns)
    # ...but never what the images copy
    for needed in ("pyproject.toml", "README.md", "api", "client", "operator", "worker"):
        assert needed not in patterns


# --- Helm chart ------------------------------------------------------------------------------


def test_chart_metadata_and_values() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert (chart["name"], chart["version"], str(chart["appVersion"])) == (
        "imagegen-operator", "0.1.0", "0.1.0")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["replicas"] == 2
    assert values["watchNamespaces"] == []
    assert "peering" not in values, "leader election by Lease, not Kopf peering"
    assert values["leaderElection"] == {"enabled": True, "leaseName": "",
                                        "leaseDurationSeconds": 15, "renewDeadlineSeconds": 10,
                                        "retryPeriodSeconds": 2}
    assert values["networkPolicy"]["enabled"] is False
    assert values["podLabels"] == {}
    assert values["workerServiceAccount"]["create"] is False
    sc = values["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    for key in ("nodeSelector", "tolerations", "affinity", "resources"):
        assert key in values


def test_chart_crds_is_a_symlink_to_the_repo_crds() -> None:
    link = CHART / "crds"
    assert link.is_symlink(), "charts/imagegen-operator/crds must be a symlink (single source)"
    assert os.readlink(link) == "../../crds"
    assert link.resolve() == (ROOT / "crds").resolve()
    if (ROOT / "crds").is_dir():
        files = sorted(p.name for p in link.iterdir() if p.suffix in (".yaml", ".yml"))
        assert files, "crds/ holds the CRD YAML files"


def _strip_template(text: str) -> str:
    """A template whose structure is plain YAML: drop `{{- ... }}` lines, stub expressions."""
    kept = [ln for ln in text.splitlines() if not re.fullmatch(r"\s*\{\{.*\}\}\s*", ln)]
    return re.sub(r"\{\{.*?\}\}", "x", "\n".join(kept))


def chart_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(_strip_template((CHART / "templates" / "clusterrole.yaml").read_text()))
    assert doc["kind"] == "ClusterRole"
    return list(doc["rules"])


def _rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


# The least-privilege contract, one entry per (group, resource) -> verbs.
EXPECTED_RBAC: dict[tuple[str, str], set[str]] = {
    **{("imagegen.dev", r): {"get", "list", "watch", "patch", "update"}
       for r in ("imagemodels", "generationpools")},
    **{("imagegen.dev", f"{r}/status"): {"get", "patch", "update"}
       for r in ("imagemodels", "generationpools")},
    **{("imagegen.dev", f"{r}/finalizers"): {"update"} for r in ("imagemodels", "generationpools")},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch", "update",
                                         "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "watch", "create", "patch",
                                                  "update", "delete"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "persistentvolumeclaims"): {"get", "list", "watch", "create", "patch"},
    ("", "pods"): {"get", "list", "watch", "patch"},
    ("", "secrets"): {"get"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "namespaces"): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}


def test_clusterrole_has_no_wildcards() -> None:
    for rule in chart_rules():
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
            assert all("*" not in str(v) for v in rule[field]), rule
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule


def test_clusterrole_is_exactly_the_least_privilege_set() -> None:
    expected = {(g, r, v) for (g, r), verbs in EXPECTED_RBAC.items() for v in verbs}
    got = _rule_set(chart_rules())
    assert got == expected, {"extra": sorted(got - expected), "missing": sorted(expected - got)}
    # in particular: secrets are only read one by one; pods are annotated (patch), never deleted
    assert ("", "secrets", "list") not in got and ("", "pods", "delete") not in got


def test_worker_service_account_has_no_token() -> None:
    text = (CHART / "templates" / "serviceaccount.yaml").read_text()
    worker = text.split("workerServiceAccount.create", 1)[1]
    assert "automountServiceAccountToken: false" in worker
    # and no template binds any role to it
    for tpl in (CHART / "templates").glob("*.yaml"):
        assert "workerServiceAccount" not in tpl.read_text() or tpl.name in (
            "serviceaccount.yaml", "deployment.yaml"), tpl.name


def test_deployment_template_contract() -> None:
    text = (CHART / "templates" / "deployment.yaml").read_text()
    assert "command: [python, -m, imagegen_operator]" in text
    for env in ("IMAGEGEN_LEASE_NAME", "IMAGEGEN_WATCH_NAMESPACES",
                "IMAGEGEN_KAFKA_BOOTSTRAP", "IMAGEGEN_REDIS_URL", "IMAGEGEN_S3_ENDPOINT",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "IMAGEGEN_DEFAULT_WORKER_IMAGE"):
        assert env in text, env
    assert ".Values.podLabels" in text
    for probe in ("livenessProbe", "readinessProbe"):
        assert re.search(probe + r":\s*\n\s*httpGet:\s*\n\s*path: /healthz\s*\n\s*port: health",
                         text), probe


# --- kustomize base --------------------------------------------------------------------------


def kustomize_docs(base: Path = INSTALL) -> list[dict[str, Any]]:
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for res in kust["resources"]:
        path = base / res
        assert path.is_file(), f"kustomization resource {res} does not exist"
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kustomization_resources_exist_and_namespace() -> None:
    kust = yaml.safe_load((INSTALL / "kustomization.yaml").read_text())
    assert kust["namespace"] == "imagegen-system"
    docs = kustomize_docs()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Namespace", "imagegen-system") in kinds
    assert ("Deployment", "imagegen-operator") in kinds
    assert ("ClusterRole", "imagegen-operator") in kinds
    assert ("Role", "imagegen-operator-leader-election") in kinds
    assert ("RoleBinding", "imagegen-operator-leader-election") in kinds
    # leader election by Lease: no Kopf peering CRDs or objects
    assert not any("kopf" in kind.lower() or "kopf.dev" in name for kind, name in kinds)
    assert not (INSTALL / "peering").exists()


def test_kustomize_clusterrole_equals_chart_template() -> None:
    role = next(d for d in kustomize_docs() if d["kind"] == "ClusterRole")
    assert _rule_set(role["rules"]) == _rule_set(chart_rules())


def test_kustomize_crds_are_the_repo_crds() -> None:
    """kubectl's kustomize refuses files outside manifests/install (symlinks are resolved first),
    so the base holds byte-identical copies of crds/*.yaml, the single source. Refresh them with
    `cp crds/*.yaml manifests/install/crds/` after `make crds`."""
    crd_dir = INSTALL / "crds"
    repo = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert repo, "crds/*.yaml exist"
    assert sorted(p.name for p in crd_dir.glob("*.yaml")) == repo
    for name in repo:
        assert (crd_dir / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"manifests/install/crds/{name} differs from crds/{name}: "
            f"run `cp crds/*.yaml manifests/install/crds/`")
    kust = yaml.safe_load((INSTALL / "kustomization.yaml").read_text())
    assert {f"crds/{n}" for n in repo} <= set(kust["resources"])
