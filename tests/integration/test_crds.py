"""Bad manifests are refused by the real API server (CRD schema + CEL), naming the field."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import Kubectl, unique

MODEL = """
apiVersion: imagegen.dev/v1alpha1
kind: ImageModel
metadata: {{name: {name}}}
spec:
{spec}
"""

POOL = """
apiVersion: imagegen.dev/v1alpha1
kind: GenerationPool
metadata: {{name: {name}}}
spec:
{spec}
"""


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.strip().splitlines())


BAD = [
    ("unknown source scheme", MODEL, "source: ftp://weights/sdxl",
     ["spec.source", "should match"]),
    ("width not a multiple of 8", MODEL,
     "source: builtin://tiny-sdxl\ndefaults: {width: 1001}",
     ["spec.defaults.width", "multiple of 8"]),
    ("default steps above the model's limit", MODEL,
     "source: builtin://tiny-sdxl\ndefaults: {steps: 90}\nlimits: {maxSteps: 50}",
     ["defaults.steps must not exceed limits.maxSteps"]),
    ("default size above max pixels", MODEL,
     "source: builtin://tiny-sdxl\ndefaults: {width: 2048, height: 2048}",
     ["defaults.width x defaults.height must not exceed limits.maxPixels"]),
    ("builtin model with a non-SDXL pipeline", MODEL,
     "source: builtin://tiny-sdxl\npipeline: sd15",
     ["builtin://tiny-sdxl is an SDXL pipeline"]),
    ("unknown sampler", MODEL,
     "source: builtin://tiny-sdxl\ndefaults: {sampler: karras}",
     ["spec.defaults.sampler", "Unsupported value", "euler"]),
    ("flow-matching sampler on an SDXL model", MODEL,
     "source: builtin://tiny-sdxl\ndefaults: {sampler: heun}",
     ["spec.defaults.sampler", "must be one of euler, euler_a, ddim, dpmpp_2m, lcm"]),
    ("UNet sampler on an SD3 model", MODEL,
     "source: builtin://tiny-sd3\npipeline: sd3\ndefaults: {sampler: ddim, width: 64, "
     "height: 64}",
     ["spec.defaults.sampler", "must be one of euler, heun for pipeline sd3"]),
    ("builtin SD3 model with the SDXL pipeline", MODEL, "source: builtin://tiny-sd3",
     ["builtin://tiny-sd3 is an SD3 pipeline: set pipeline to sd3"]),
    ("Flux size not a multiple of 16", MODEL,
     "source: builtin://tiny-flux\npipeline: flux\ndefaults: {width: 1000}",
     ["multiples of 16 for pipeline flux"]),
    ("ControlNet on a Flux model", MODEL,
     "source: builtin://tiny-flux\npipeline: flux\ndefaults: {width: 64, height: 64}\n"
     "controlnets:\n- {name: e, source: 's3://weights/e'}",
     ["spec.controlnets", "controlnets are served for pipeline sdxl, sd15 only"]),
    ("builtin SDXL ControlNet on an SD 1.5 model", MODEL,
     "source: s3://weights/sd15\npipeline: sd15\n"
     "controlnets:\n- {name: e, source: 'builtin://tiny-controlnet-sdxl'}",
     ["builtin://tiny-controlnet-sdxl fits an SDXL model: set pipeline to sdxl"]),
    ("ControlNet default scale above 2", MODEL,
     "source: builtin://tiny-sdxl\n"
     "controlnets:\n- {name: e, source: 's3://weights/e', defaultScale: 3}",
     ["spec.controlnets[0].defaultScale", "less than or equal to 2"]),
    ("a model as ControlNet source", MODEL,
     "source: builtin://tiny-sdxl\ncontrolnets:\n- {name: e, source: 'builtin://tiny-sdxl'}",
     ["spec.controlnets[0].source", "should match"]),
    ("warm minimum above maximum", POOL,
     "models: [m]\nwarm: {minReplicas: 5, maxReplicas: 2}",
     ["warm.minReplicas must be less than or equal to warm.maxReplicas"]),
    ("no models", POOL, "warm: {minReplicas: 1}", ["spec.models", "Required"]),
    ("zero partitions", POOL, "models: [m]\nqueue: {partitions: 0}",
     ["spec.queue.partitions", "greater than or equal to 1"]),
    ("bootstrap set twice", POOL,
     "models: [m]\nqueue:\n  bootstrapServers: k:9092\n  bootstrapServersFrom:\n"
     "    secretKeyRef: {name: kafka, key: url}",
     ["set at most one of bootstrapServers or bootstrapServersFrom"]),
    ("reference to both a ConfigMap and a Secret", POOL,
     "models: [m]\ncache:\n  redisUrlFrom:\n    secretKeyRef: {name: r, key: url}\n"
     "    configMapKeyRef: {name: r, key: url}",
     ["set exactly one of configMapKeyRef or secretKeyRef"]),
    ("duplicate tier", POOL,
     "models: [m]\nqueue:\n  tiers:\n  - {name: fast, weight: 2}\n  - {name: fast, weight: 3}",
     ["spec.queue.tiers", "Duplicate value"]),
    ("tier name with capitals", POOL,
     "models: [m]\nqueue:\n  tiers:\n  - {name: Gold, weight: 2}",
     ["spec.queue.tiers[0].name", "should match"]),
    ("Redis URL with a password", POOL,
     "models: [m]\ncache: {redisUrl: 'redis://:s3cret@redis:6379/0'}",
     ["cache.redisUrl must not carry a password", "cache.redisUrlFrom.secretKeyRef"]),
    ("Redis URL with a user and password", POOL,
     "models: [m]\ncache: {redisUrl: 'rediss://app:s3cret@redis:6380'}",
     ["cache.redisUrl must not carry a password"]),
    ("misspelled field", POOL, "models: [m]\nwarm: {minReplica: 1}",
     ['unknown field "spec.warm.minReplica"']),
    ("negative cold maximum", POOL, "models: [m]\ncold: {maxReplicas: -1}",
     ["spec.cold.maxReplicas", "greater than or equal to 0"]),
    ("retention of zero days", POOL, "models: [m]\nstorage: {retentionDays: 0}",
     ["spec.storage.retentionDays", "greater than or equal to 1"]),
    ("retention over ten years", POOL, "models: [m]\nstorage: {retentionDays: 4000}",
     ["spec.storage.retentionDays", "less than or equal to 3650"]),
    ("gateway without a keys Secret", POOL, "models: [m]\ngateway: {enabled: true}",
     ["spec.gateway.auth", "gateway.auth.secretName is required when gateway.enabled is true"]),
    ("gateway with no replicas", POOL,
     "models: [m]\ngateway: {enabled: true, replicas: 0, auth: {secretName: k}}",
     ["spec.gateway.replicas", "greater than or equal to 1"]),
    ("gateway with fixed replicas and autoscaling", POOL,
     "models: [m]\ngateway:\n  replicas: 2\n  autoscaling: {maxReplicas: 4}",
     ["spec.gateway.autoscaling", "gateway.replicas (a fixed count) and gateway.autoscaling "
      "(scaled on CPU) are exclusive: set one of them"]),
    ("gateway autoscaling min above max", POOL,
     "models: [m]\ngateway:\n  autoscaling: {minReplicas: 5, maxReplicas: 3}",
     ["spec.gateway.autoscaling.minReplicas", "gateway.autoscaling.minReplicas must be less "
      "than or equal to gateway.autoscaling.maxReplicas"]),
    ("gateway CPU target below 10%", POOL,
     "models: [m]\ngateway:\n  autoscaling: {targetCPUUtilizationPercentage: 5}",
     ["spec.gateway.autoscaling.targetCPUUtilizationPercentage", "greater than or equal to 10"]),
    ("unknown wakeCold", POOL,
     "models: [m]\nqueue:\n  tiers:\n  - {name: relax, weight: 1, wakeCold: Sometimes}",
     ["spec.queue.tiers[0].wakeCold", "Unsupported value", "NearMaxWait"]),
]


@pytest.mark.parametrize(("what", "template", "spec", "expected"), BAD,
                         ids=[b[0].replace(" ", "-") for b in BAD])
def test_bad_manifest_refused(kubectl: Kubectl, crds: None, k8s_namespace: str, what: str,
                              template: str, spec: str, expected: list[str]) -> None:
    manifest = template.format(name=unique("bad"), spec=indent(spec))
    proc = kubectl("apply", "-n", k8s_namespace, "-f", "-", input=manifest, check=False)
    assert proc.returncode != 0, f"{what}: the API server accepted it:\n{manifest}"
    for fragment in expected:
        assert fragment in proc.stderr, f"{what}: {fragment!r} not in: {proc.stderr}"


def test_pool_name_too_long(kubectl: Kubectl, crds: None, k8s_namespace: str) -> None:
    manifest = POOL.format(name="p" * 41, spec=indent("models: [m]"))
    proc = kubectl("apply", "-n", k8s_namespace, "-f", "-", input=manifest, check=False)
    assert proc.returncode != 0
    assert "metadata.name must be at most 40 characters" in proc.stderr


def test_source_is_immutable(kubectl: Kubectl, crds: None, k8s_namespace: str) -> None:
    name = unique("m")
    kubectl("apply", "-n", k8s_namespace, "-f", "-",
            input=MODEL.format(name=name, spec=indent("source: s3://weights/a")))
    proc = kubectl("apply", "-n", k8s_namespace, "-f", "-", check=False,
                   input=MODEL.format(name=name, spec=indent("source: s3://weights/b")))
    assert proc.returncode != 0
    assert "source is immutable" in proc.stderr


def test_minimal_manifests_accepted_with_defaults(kubectl: Kubectl, crds: None,
                                                  k8s_namespace: str) -> None:
    name = unique("p")
    kubectl("apply", "-n", k8s_namespace, "-f", "-",
            input=POOL.format(name=name, spec=indent("models: [m]")))
    got = kubectl("get", "gp", name, "-n", k8s_namespace,
                  "-o", "jsonpath={.spec.warm.minReplicas}/{.spec.autoscaling.pollSeconds}").stdout
    assert got == "1/5"  # defaults applied by the API server from the schema


def test_controlnets_accepted_with_their_default_scale(kubectl: Kubectl, crds: None,
                                                      k8s_namespace: str) -> None:
    name = unique("m")
    kubectl("apply", "-n", k8s_namespace, "-f", "-", input=MODEL.format(name=name, spec=indent(
        "source: builtin://tiny-sdxl\ncontrolnets:\n"
        "- {name: edges, source: 'builtin://tiny-controlnet-sdxl'}\n"
        "- {name: depth, source: 'hf://org/depth@main', defaultScale: 0.5}")))
    got = kubectl("get", "im", name, "-n", k8s_namespace, "-o",
                  "jsonpath={.spec.controlnets[*].defaultScale}").stdout
    assert got == "1 0.5"  # defaults applied by the API server from the schema


def test_gateway_defaults(kubectl: Kubectl, crds: None, k8s_namespace: str) -> None:
    name = unique("p")
    kubectl("apply", "-n", k8s_namespace, "-f", "-", input=POOL.format(name=name, spec=indent(
        "models: [m]\ngateway: {enabled: true, auth: {secretName: keys}}")))
    got = kubectl("get", "gp", name, "-n", k8s_namespace, "-o",
                  "jsonpath={.spec.gateway.replicas}/{.spec.gateway.resources.cpu}/"
                  "{.spec.gateway.resources.memory}").stdout
    assert got == "/500m/512Mi"  # replicas unset: 2 unless autoscaling is set (exclusive)
    scaled = unique("p")
    kubectl("apply", "-n", k8s_namespace, "-f", "-", input=POOL.format(name=scaled, spec=indent(
        "models: [m]\ngateway: {enabled: true, auth: {secretName: keys}, autoscaling: {}}")))
    got = kubectl("get", "gp", scaled, "-n", k8s_namespace, "-o",
                  "jsonpath={.spec.gateway.autoscaling}").stdout
    assert json.loads(got) == {"minReplicas": 2, "maxReplicas": 10,
                               "targetCPUUtilizationPercentage": 70}


# --- spec edits that would strand a backlog (transition rules with oldSelf) -------------------

POOL_QUEUE = """models: [m]
queue:
  {source}
  tiers:
{tiers}"""


def pool_with(tiers: list[str], source: str = "bootstrapServers: kafka-a:9092") -> str:
    return POOL_QUEUE.format(source=source,
                             tiers="\n".join(f"  - {{name: {t}, weight: 1}}" for t in tiers))


REFUSED_EDITS = [
    ("tier removed", pool_with(["gold", "free"]), pool_with(["gold"]),
     ["a tier cannot be removed or renamed", "create a new GenerationPool"]),
    ("tier renamed", pool_with(["gold", "free"]), pool_with(["gold", "basic"]),
     ["a tier cannot be removed or renamed"]),
    ("default tiers replaced", "models: [m]\nqueue: {partitions: 1}",
     pool_with(["gold"], "partitions: 1"), ["a tier cannot be removed or renamed"]),
    ("bootstrap servers changed", pool_with(["gold"]),
     pool_with(["gold"], "bootstrapServers: kafka-b:9092"),
     ["queue.bootstrapServers cannot change", "let this one drain"]),
    ("bootstrap servers dropped for the default", pool_with(["gold"]),
     pool_with(["gold"], "partitions: 6"), ["queue.bootstrapServers cannot change"]),
    ("bootstrap servers moved to a Secret", pool_with(["gold"]),
     pool_with(["gold"], "bootstrapServersFrom: {secretKeyRef: {name: k, key: url}}"),
     ["queue.bootstrapServers cannot change", "queue.bootstrapServersFrom cannot change"]),
    ("bootstrap Secret changed",
     pool_with(["gold"], "bootstrapServersFrom: {secretKeyRef: {name: k, key: url}}"),
     pool_with(["gold"], "bootstrapServersFrom: {secretKeyRef: {name: k2, key: url}}"),
     ["queue.bootstrapServersFrom cannot change"]),
]


@pytest.mark.parametrize(("what", "before", "after", "expected"), REFUSED_EDITS,
                         ids=[e[0].replace(" ", "-") for e in REFUSED_EDITS])
def test_edit_that_strands_a_backlog_refused(kubectl: Kubectl, crds: None, k8s_namespace: str,
                                             what: str, before: str, after: str,
                                             expected: list[str]) -> None:
    name = unique("p")
    kubectl("apply", "-n", k8s_namespace, "-f", "-",
            input=POOL.format(name=name, spec=indent(before)))
    proc = kubectl("apply", "-n", k8s_namespace, "-f", "-", check=False,
                   input=POOL.format(name=name, spec=indent(after)))
    assert proc.returncode != 0, f"{what}: the API server accepted it"
    for fragment in expected:
        assert fragment in proc.stderr, f"{what}: {fragment!r} not in: {proc.stderr}"


def test_adding_a_tier_and_other_queue_edits_are_allowed(kubectl: Kubectl, crds: None,
                                                         k8s_namespace: str) -> None:
    name = unique("p")
    kubectl("apply", "-n", k8s_namespace, "-f", "-",
            input=POOL.format(name=name, spec=indent(pool_with(["gold"]))))
    grown = pool_with(["gold", "free"]).replace("queue:\n", "queue:\n  partitions: 12\n")
    kubectl("apply", "-n", k8s_namespace, "-f", "-",
            input=POOL.format(name=name, spec=indent(grown)))
    got = kubectl("get", "gp", name, "-n", k8s_namespace, "-o",
                  "jsonpath={.spec.queue.tiers[*].name}/{.spec.queue.partitions}").stdout
    assert got == "gold free/12"


def test_pool_with_default_tiers_can_grow_tiers_and_take_status(kubectl: Kubectl, crds: None,
                                                                k8s_namespace: str) -> None:
    """No spec.queue.tiers means the default tiers: the rule reads them so, and a status write
    (the operator's, which re-validates the object) is not refused."""
    name = unique("p")
    kubectl("apply", "-n", k8s_namespace, "-f", "-",
            input=POOL.format(name=name, spec=indent("models: [m]\nqueue: {partitions: 1}")))
    kubectl("patch", "gp", name, "-n", k8s_namespace, "--subresource=status", "--type=merge",
            "-p", '{"status": {"observedGeneration": 1}}')
    grown = pool_with(["turbo", "fast", "relax", "bulk"], "partitions: 1")
    kubectl("apply", "-n", k8s_namespace, "-f", "-",
            input=POOL.format(name=name, spec=indent(grown)))
    got = kubectl("get", "gp", name, "-n", k8s_namespace, "-o",
                  "jsonpath={.spec.queue.tiers[*].name}/{.status.observedGeneration}").stdout
    assert got == "turbo fast relax bulk/1"


def test_redis_url_without_password_accepted(kubectl: Kubectl, crds: None,
                                             k8s_namespace: str) -> None:
    for url in ("redis://redis:6379/0", "redis://app@redis:6379/1", "rediss://redis.example:6380"):
        name = unique("p")
        kubectl("apply", "-n", k8s_namespace, "-f", "-", input=POOL.format(
            name=name, spec=indent(f"models: [m]\ncache: {{redisUrl: '{url}'}}")))
        got = kubectl("get", "gp", name, "-n", k8s_namespace, "-o",
                      "jsonpath={.spec.cache.redisUrl}").stdout
        assert got == url
