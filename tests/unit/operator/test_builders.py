"""Builders: spec → children. Table-driven over the fields a platform engineer sets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from imagegen_api import naming
from imagegen_api.specs import GenerationPoolSpec, ImageModelSpec
from imagegen_api.workerconfig import WorkerConfig
from imagegen_operator import builders
from imagegen_operator.builders.context import OperatorDefaults, PoolContext

TINY = ImageModelSpec.model_validate({"source": "builtin://tiny-sdxl"})


def ctx(pool: dict[str, Any] | None = None, models: dict[str, ImageModelSpec] | None = None,
        **kw: Any) -> PoolContext:
    spec = GenerationPoolSpec.model_validate({"models": ["tiny"], **(pool or {})})
    # Replicas come from scaling.policy (tests/unit/operator/test_policy.py); here the minimum.
    kw.setdefault("warm_replicas", spec.warm.min_replicas)
    kw.setdefault("cold_replicas", 0)
    return PoolContext(namespace="ns1", name="p1", uid="uid-1", spec=spec,
                       models=models or {"tiny": TINY}, **kw)


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{c['kind']}/{c['metadata']['name']}": c for c in children}


def pod(children: list[dict[str, Any]], role: str) -> dict[str, Any]:
    return by_kind(children)[f"Deployment/p1-{role}"]["spec"]["template"]["spec"]


def test_children_names_owner_and_labels() -> None:
    children = builders.pool_children(ctx())
    assert sorted(by_kind(children)) == [
        "ConfigMap/p1-worker-config", "Deployment/p1-cold", "Deployment/p1-warm",
        "PodDisruptionBudget/p1-warm", "Service/p1-metrics"]
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "ns1"
        (owner,) = meta["ownerReferences"]
        assert owner == {"apiVersion": "imagegen.dev/v1alpha1", "kind": "GenerationPool",
                         "name": "p1", "uid": "uid-1", "controller": True,
                         "blockOwnerDeletion": True}
        assert meta["labels"][naming.LABEL_POOL] == "p1"


def test_config_map_is_valid_worker_config() -> None:
    cm = builders.pool_children(ctx())[0]
    cfg = WorkerConfig.model_validate_json(cm["data"]["worker.json"])
    assert cfg.kafka.group == "imagegen.ns1.p1"
    assert cfg.kafka.tier_topics == {"turbo": "imagegen.ns1.p1.turbo",
                                     "fast": "imagegen.ns1.p1.fast",
                                     "relax": "imagegen.ns1.p1.relax"}
    assert cfg.kafka.results_topic == "imagegen.ns1.p1.results"
    assert cfg.kafka.dlq_topic == "imagegen.ns1.p1.dlq"
    assert cfg.default_model == "tiny"


def test_storage_retention_reaches_the_worker_config() -> None:
    for storage, days in (({}, None), ({"retentionDays": 30}, 30)):
        cm = builders.pool_children(ctx({"storage": storage}))[0]
        assert WorkerConfig.model_validate_json(cm["data"]["worker.json"]).storage \
            .retention_days == days


@pytest.mark.parametrize(("pool", "role", "path", "expected"), [
    ({}, "warm", ("resources", "limits", "nvidia.com/gpu"), "1"),
    ({}, "warm", ("resources", "requests", "nvidia.com/gpu"), "1"),
    ({"gpu": {"resourceName": "amd.com/gpu", "count": 2}}, "cold",
     ("resources", "limits", "amd.com/gpu"), "2"),
    ({"resources": {"cpu": "2", "memory": "8Gi"}}, "warm", ("resources", "requests", "memory"),
     "8Gi"),
    ({}, "warm", ("readinessProbe", "httpGet", "path"), "/readyz"),
    ({}, "warm", ("livenessProbe", "httpGet", "path"), "/livez"),
    ({}, "warm", ("securityContext", "readOnlyRootFilesystem"), True),
    ({}, "cold", ("securityContext", "allowPrivilegeEscalation"), False),
    ({}, "warm", ("command",), ["imagegen-worker", "run"]),
])
def test_container_fields(pool: dict[str, Any], role: str, path: tuple[str, ...],
                          expected: object) -> None:
    container = pod(builders.pool_children(ctx(pool)), role)["containers"][0]
    value: Any = container
    for key in path:
        value = value[key]
    assert value == expected


def test_cpu_pool_requests_no_gpu() -> None:
    container = pod(builders.pool_children(ctx({"gpu": {"count": 0}})), "warm")["containers"][0]
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_cold_goes_to_spot_with_toleration_warm_does_not() -> None:
    children = builders.pool_children(ctx())
    cold, warm = pod(children, "cold"), pod(children, "warm")
    assert cold["nodeSelector"] == {naming.LABEL_CAPACITY_TYPE: naming.CAPACITY_SPOT}
    assert cold["tolerations"] == [{"key": naming.TAINT_SPOT, "operator": "Equal",
                                    "value": "true", "effect": "NoSchedule"}]
    assert "tolerations" not in warm
    assert "nodeSelector" not in warm


def test_gpu_product_selects_nodes() -> None:
    warm = pod(builders.pool_children(ctx({"gpu": {"product": "NVIDIA-H100-80GB-HBM3"}})),
               "warm")
    assert warm["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_drain_and_grace_period() -> None:
    spec = pod(builders.pool_children(ctx({"worker": {"terminationGracePeriodSeconds": 90}})),
               "warm")
    assert spec["terminationGracePeriodSeconds"] == 90
    hook = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert hook == ["imagegen-worker", "drain", "--wait", "85"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False


@pytest.mark.parametrize(("warm", "cold"), [(1, 0), (3, 2), (0, 0)])
def test_replicas_rendered_as_decided(warm: int, cold: int) -> None:
    """The policy is the one place that decides replicas (its bounds: test_policy.py
    test_bounds_are_decided_by_the_policy); the builders render its numbers as they are."""
    children = by_kind(builders.pool_children(ctx(warm_replicas=warm, cold_replicas=cold)))
    got = (children["Deployment/p1-warm"]["spec"]["replicas"],
           children["Deployment/p1-cold"]["spec"]["replicas"])
    assert got == (warm, cold)


def test_config_change_rolls_pods() -> None:
    a = by_kind(builders.pool_children(ctx()))["Deployment/p1-warm"]
    bigger = ctx({"batching": {"maxBatchSize": 8}})
    b = by_kind(builders.pool_children(bigger))["Deployment/p1-warm"]
    key = naming.ANNOTATION_CONFIG_HASH
    assert (a["spec"]["template"]["metadata"]["annotations"][key]
            != b["spec"]["template"]["metadata"]["annotations"][key])


def test_spec_pod_labels_propagate_only_when_set() -> None:
    runner = "imagegen.dev/local-runner"  # what the dev stack's pod runner selects (dev only)
    plain = by_kind(builders.pool_children(
        ctx(pool_labels={runner: "true", "team": "x"})))["Deployment/p1-warm"]
    dev = by_kind(builders.pool_children(ctx(
        {"worker": {"podLabels": {runner: "true"}}},
        pool_labels={"team": "x"})))["Deployment/p1-warm"]
    # The pool's own metadata labels never reach its pods; spec.worker.podLabels does.
    assert runner not in plain["spec"]["template"]["metadata"]["labels"]
    labels = dev["spec"]["template"]["metadata"]["labels"]
    assert labels[runner] == "true"
    assert "team" not in labels
    assert labels[naming.LABEL_POOL] == "p1"
    # The selector never includes mutable labels.
    assert dev["spec"]["selector"]["matchLabels"] == {naming.LABEL_POOL: "p1",
                                                      naming.LABEL_ROLE: "warm"}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_connections_from_references_and_defaults() -> None:
    defaults = OperatorDefaults(kafka_bootstrap="k:9092", redis_url="redis://r:6379/0",
                                s3_endpoint="http://s3:9000", s3_credentials_secret="creds")
    pool = {"queue": {"bootstrapServersFrom": {"secretKeyRef": {"name": "kafka", "key": "url"}}}}
    env = _env(pod(builders.pool_children(ctx(pool, defaults=defaults)), "warm")["containers"][0])
    assert env[naming.ENV_KAFKA_BOOTSTRAP] == {"secretKeyRef": {"name": "kafka", "key": "url"}}
    assert env[naming.ENV_REDIS_URL] == "redis://r:6379/0"
    assert env[naming.ENV_S3_ENDPOINT] == "http://s3:9000"
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "creds",
                                                         "key": "AWS_ACCESS_KEY_ID"}}
    assert env[naming.ENV_ROLE] == "warm"


def test_spec_bootstrap_goes_into_config_not_env() -> None:
    defaults = OperatorDefaults(kafka_bootstrap="k:9092")
    children = builders.pool_children(ctx({"queue": {"bootstrapServers": "b:1"}},
                                          defaults=defaults))
    env = _env(pod(children, "warm")["containers"][0])
    assert naming.ENV_KAFKA_BOOTSTRAP not in env
    assert json.loads(children[0]["data"]["worker.json"])["kafka"]["bootstrapServers"] == "b:1"


def test_worker_image_default_and_override() -> None:
    defaults = OperatorDefaults(worker_image="registry.local/worker:dev")
    image = pod(builders.pool_children(ctx(defaults=defaults)), "warm")["containers"][0]["image"]
    assert image == "registry.local/worker:dev"
    explicit = ctx({"worker": {"image": "mine:1"}}, defaults=defaults)
    assert pod(builders.pool_children(explicit), "warm")["containers"][0]["image"] == "mine:1"


def test_cache_claim_mounted_read_only() -> None:
    model = ImageModelSpec.model_validate({"source": "s3://weights/sdxl",
                                           "prefetch": {"claimName": "weights"}})
    spec = pod(builders.pool_children(ctx(models={"tiny": model})), "cold")
    vol = {v["name"]: v for v in spec["volumes"]}["model-cache"]
    assert vol["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}


def test_two_cache_claims_refused_naming_the_field() -> None:
    a = ImageModelSpec.model_validate({"source": "pvc://one/a"})
    b = ImageModelSpec.model_validate({"source": "pvc://two/b"})
    c = ctx({"models": ["a", "b"]}, models={"a": a, "b": b})
    with pytest.raises(builders.BuildError, match=r"spec.models: .*one, two"):
        builders.pool_children(c)


def test_pdb_and_service() -> None:
    children = by_kind(builders.pool_children(ctx()))
    pdb = children["PodDisruptionBudget/p1-warm"]["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": {
        naming.LABEL_POOL: "p1", naming.LABEL_ROLE: "warm"}}}
    svc = children["Service/p1-metrics"]["spec"]
    assert svc["clusterIP"] == "None"
    assert svc["ports"][0]["port"] == naming.WORKER_HTTP_PORT


def test_topics_follow_tiers_and_partitions() -> None:
    spec = GenerationPoolSpec.model_validate({
        "models": ["m"], "queue": {"partitions": 12, "tiers": [{"name": "gold", "weight": 3}]}})
    topics = builders.pool_topics("ns", "p", spec)
    assert [(t.name, t.partitions) for t in topics] == [
        ("imagegen.ns.p.gold", 12), ("imagegen.ns.p.results", 12), ("imagegen.ns.p.dlq", 12)]


def test_prefetch_job_and_claim() -> None:
    model = ImageModelSpec.model_validate({"source": "s3://weights/sdxl",
                                           "prefetch": {"claimName": "w", "size": "20Gi"}})
    owner = builders.Owner("imagegen.dev/v1alpha1", "ImageModel", "sdxl", "u")
    pvc = builders.cache_pvc("ns", "sdxl", model, owner)
    assert pvc is not None and pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    job = builders.prefetch_job("ns", "sdxl", model, owner, OperatorDefaults(), "img:1", "h")
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:4] == ["imagegen-worker", "prefetch", "--model", "sdxl"]
    assert json.loads(container["command"][5])["source"] == "s3://weights/sdxl"
    assert builders.prefetch_job("ns", "m", TINY, owner, OperatorDefaults(), "i", "h") is None


def test_content_credentials_secret_is_mounted_in_every_worker() -> None:
    plain = pod(builders.pool_children(ctx()), "warm")
    assert "content-credentials" not in {v["name"] for v in plain["volumes"]}
    children = builders.pool_children(ctx({"output": {"contentCredentials": {
        "secretName": "c2pa-signer"}}}))
    for role in ("warm", "cold"):
        spec = pod(children, role)
        vol = {v["name"]: v for v in spec["volumes"]}["content-credentials"]
        assert vol["secret"]["secretName"] == "c2pa-signer"
        assert {i["key"] for i in vol["secret"]["items"]} == {"tls.crt", "tls.key"}
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"]
                    if m["name"] == "content-credentials"]
        assert mount == {"name": "content-credentials", "readOnly": True,
                         "mountPath": naming.CONTENT_CREDENTIALS_DIR}
    config = WorkerConfig.model_validate_json(
        by_kind(children)["ConfigMap/p1-worker-config"]["data"][naming.WORKER_CONFIG_FILE])
    assert config.output.content_credentials is not None
    assert config.output.content_credentials.secret_name == "c2pa-signer"
