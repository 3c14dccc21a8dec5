"""Typed specs of the two custom resources, with their defaults and cross-field rules.

The single source of truth: `crdgen` renders crds/*.yaml from these models (CEL rules included)
and a test fails if the files drift. The operator parses every CR through them once.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import ConfigDict, Field, JsonValue, field_validator, model_validator

from . import naming
from .base import JsonDict, KubeModel, cel
from .families import BUILTIN_CONTROLNETS, BUILTIN_FAMILIES, FAMILIES

# Enums and limits stated once: the CRD schema, the worker's request validation and the CLI's
# choices all read these.
# Every family's samplers (families.FAMILIES says which ones each family may use).
Sampler = Literal["euler", "euler_a", "ddim", "dpmpp_2m", "lcm", "heun"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)
PipelineFamily = Literal["sdxl", "sd15", "sd3", "flux", "auto"]
DType = Literal["float16", "bfloat16", "float32"]
OutputFormat = Literal["png", "webp", "jpeg"]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
# Classifier-free guidance scale: what an ImageModel's default and a request may set.
GUIDANCE_RANGE: tuple[float, float] = (0, 50)
# Image sides in pixels: at least this, at most that, a multiple of the last (the VAE's factor).
MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 64, 8192, 8

SOURCE_PATTERN = (
    r"^(hf://[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(@[A-Za-z0-9._/-]+)?"
    r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?"
    r"|file:///[^\s]*"
    r"|builtin://(" + "|".join(BUILTIN_FAMILIES) + r"))$"
)
# Local sources the worker refuses to read (pipelines/sources.py checks the same after decoding):
# a `..` segment (also percent-encoded) would leave the claim's volume, and /dev, /proc, /sys
# hold devices and kernel files that are not weights (file:///dev/zero would hash forever).
_PARENT_SEGMENT = r"^(pvc|file)://.*(/|%2[fF])([.]|%2[eE]){2}(/|%2[fF]|$)"
_KERNEL_FILES = r"^file:///(dev|proc|sys)(/|$)"
SOURCE_RULES: tuple[tuple[str, str], ...] = (
    (_PARENT_SEGMENT, ("a '..' path segment is not allowed in pvc:// or file:// sources "
                       "(the path must stay inside the volume it names)")),
    (_KERNEL_FILES, ("file:// sources may not read /dev, /proc or /sys (devices and kernel "
                     "files are not weights)")),
)


def _source_rules() -> list[JsonValue]:
    return [cel(f"!self.matches('{rx}')", msg) for rx, msg in SOURCE_RULES]


def check_source(uri: str) -> str:
    """The pydantic side of SOURCE_RULES (the operator and the prefetch parse specs with it)."""
    for rx, msg in SOURCE_RULES:
        if re.search(rx, uri):
            raise ValueError(f"source {uri!r}: {msg}")
    return uri


DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"


# --- ImageModel ------------------------------------------------------------------------------


class GenerationDefaults(KubeModel):
    """Parameters a request gets when it does not set them."""

    sampler: Sampler = "euler"
    steps: int = Field(30, ge=1, le=500)
    guidance: float = Field(7.0, ge=GUIDANCE_RANGE[0], le=GUIDANCE_RANGE[1])
    width: int = Field(1024, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=SIDE_MULTIPLE)
    height: int = Field(1024, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=SIDE_MULTIPLE)
    negative_prompt: str = Field("", max_length=2000)


class ModelLimits(KubeModel):
    """What one request may ask of this model; every rejection names one of these."""

    max_pixels: int = Field(1536 * 1536, ge=MIN_SIDE * MIN_SIDE, le=MAX_SIDE * MAX_SIDE)
    max_steps: int = Field(100, ge=1, le=500)
    max_prompt_tokens: int = Field(
        512, ge=1, le=4096,
        description="Longest prompt (and negative prompt) accepted, in tokens; longer is "
        "rejected. A prompt past the text encoder's window (77 tokens for CLIP) is served "
        "truncated, with a warning in the result.")
    max_images_per_request: int = Field(4, ge=1, le=16)


class LoraAdapter(KubeModel):
    name: str = Field(pattern=DNS_LABEL, max_length=63)
    source: str = Field(pattern=SOURCE_PATTERN, max_length=512,
                        json_schema_extra={"x-kubernetes-validations": _source_rules()})
    weight: float = Field(1.0, ge=-5, le=5)

    _safe_source = field_validator("source")(check_source)


# A ControlNet's source: a model source's forms, with the built-in ControlNets as builtin://.
CONTROLNET_SOURCE_PATTERN = (SOURCE_PATTERN.partition("|builtin://")[0]
                             + "|builtin://(" + "|".join(BUILTIN_CONTROLNETS) + "))$")
# How strongly a control image steers: a request's `control.scale` and a declared default.
CONTROL_SCALE_RANGE: tuple[float, float] = (0.0, 2.0)
CONTROLNET_FAMILIES: tuple[str, ...] = tuple(f for f, facts in FAMILIES.items() if facts.controlnet)


class ControlNet(KubeModel):
    """A ControlNet a request may name (`control.name`): loaded by a worker on first use."""

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    source: str = Field(
        pattern=CONTROLNET_SOURCE_PATTERN, max_length=512,
        json_schema_extra={"x-kubernetes-validations": _source_rules()},
        description="Where the ControlNet's weights come from, as the model's source: hf://, "
        "s3://, pvc:// or file:// holding a diffusers ControlNetModel folder (config.json and "
        "weights), or builtin://tiny-controlnet-sdxl (random weights matching "
        "builtin://tiny-sdxl, for tests).")
    default_scale: float = Field(
        1.0, ge=CONTROL_SCALE_RANGE[0], le=CONTROL_SCALE_RANGE[1],
        description="controlnet_conditioning_scale of a request that names this ControlNet "
        "without `control.scale` (0: no effect).")

    _safe_source = field_validator("source")(check_source)


class Prefetch(KubeModel):
    """Download the weights once into a PersistentVolumeClaim that workers mount read-only."""

    claim_name: str = Field(pattern=DNS_LABEL, max_length=63)
    size: str | None = Field(
        None, pattern=QUANTITY,
        description="When set, the operator creates the claim if it is missing.")
    storage_class_name: str | None = None
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] = Field(
        "ReadWriteMany",
        description="Access mode of the claim the operator creates. ReadWriteMany (the default) "
        "lets warm and cold workers on different nodes mount it (read-only) at once; it needs a "
        "storage class that supports it (NFS, EFS, Filestore, CephFS, ...). With ReadWriteOnce "
        "every worker must run on one node (a pool placing workers on more than one is reported "
        "Degraded, reason CacheClaimPlacement).")


class Optimizations(KubeModel):
    """Speed levers. The defaults never change pixels; lossy ones are opt-in per model."""

    compile: bool = False
    channels_last: bool = True
    fuse_qkv: bool = False
    vae_tiling: bool = False
    step_cache: bool = Field(
        False, description="Lossy, opt-in: reuse deep UNet features across steps.")
    fp8: bool = Field(False, description="Lossy, opt-in: fp8 matmuls.")


def _builtin_message(name: str, fam: str) -> str:
    return f"builtin://{name} is {FAMILIES[fam].title} pipeline: set pipeline to {fam}"


def _family_rules() -> list[JsonValue]:
    """CEL twins of family_errors (the rule, its message, its field), from families.FAMILIES."""
    rules: list[JsonValue] = []
    for name, fam in BUILTIN_FAMILIES.items():
        rules.append(cel(f"self.source != 'builtin://{name}' || self.pipeline == '{fam}'",
                         _builtin_message(name, fam), ".pipeline"))
    by_samplers: dict[tuple[str, ...], list[str]] = {}
    for fam, facts in FAMILIES.items():
        by_samplers.setdefault(facts.samplers, []).append(fam)
    for allowed, fams in by_samplers.items():
        listed, names = ", ".join(f"'{s}'" for s in allowed), ", ".join(f"'{f}'" for f in fams)
        rules.append(cel(f"!(self.pipeline in [{names}]) || self.defaults.sampler in [{listed}]",
                         f"defaults.sampler must be one of {', '.join(allowed)} for pipeline "
                         f"{', '.join(fams)}", ".defaults.sampler"))
    for fam, facts in FAMILIES.items():
        if facts.side_multiple != SIDE_MULTIPLE:
            m = facts.side_multiple
            rules.append(cel(f"self.pipeline != '{fam}' || (self.defaults.width % {m} == 0 && "
                             f"self.defaults.height % {m} == 0)",
                             f"defaults.width and defaults.height must be multiples of {m} for "
                             f"pipeline {fam}", ".defaults"))
        if not facts.negative_prompt:
            rules.append(cel(f"self.pipeline != '{fam}' || self.defaults.negativePrompt == ''",
                             f"pipeline {fam} reads no negative prompt: leave "
                             "defaults.negativePrompt empty", ".defaults.negativePrompt"))
    served = ", ".join(f"'{f}'" for f in CONTROLNET_FAMILIES)
    rules.append(cel(f"!has(self.controlnets) || size(self.controlnets) == 0 || "
                     f"self.pipeline in [{served}]", _controlnet_family_message(), ".controlnets"))
    for name, fam in BUILTIN_CONTROLNETS.items():
        rules.append(cel(f"!has(self.controlnets) || "
                         f"self.controlnets.all(c, c.source != 'builtin://{name}') || "
                         f"self.pipeline == '{fam}'",
                         f"builtin://{name} fits {FAMILIES[fam].title} model: set pipeline to "
                         f"{fam}", ".controlnets"))
    return rules


def _controlnet_family_message() -> str:
    return ("controlnets are served for pipeline " + ", ".join(CONTROLNET_FAMILIES)
            + " only: remove them or set pipeline to one of those")


class ImageModelSpec(KubeModel):
    model_config = KubeModel.model_config | ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.defaults.width * self.defaults.height <= self.limits.maxPixels",
                    "defaults.width x defaults.height must not exceed limits.maxPixels",
                    ".defaults",
                ),
                cel(
                    "self.defaults.steps <= self.limits.maxSteps",
                    "defaults.steps must not exceed limits.maxSteps",
                    ".defaults.steps",
                ),
                *_family_rules(),
            ]
        }
    )

    source: str = Field(
        pattern=SOURCE_PATTERN,
        max_length=512,
        description="Where the weights come from: hf://org/repo@revision, s3://bucket/prefix, "
        "pvc://claim/path, file:///path, builtin://tiny-sdxl, builtin://tiny-sd3, "
        "builtin://tiny-flux (random weights, CPU tests; pipeline sdxl, sd3, flux) or "
        "builtin://shapes-sdxl (trained in code on shapes, the CPU demo). Immutable.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self == oldSelf",
                    "source is immutable: create a new ImageModel to serve other weights",
                ),
                *_source_rules(),
            ]
        },
    )
    pipeline: PipelineFamily = Field(
        "sdxl", description="Pipeline family of the weights: it decides the samplers a request "
        "may name (sdxl, sd15, auto: euler, euler_a, ddim, dpmpp_2m, lcm; sd3: euler, heun; "
        "flux: euler), the image side multiple (16 for sd3 and flux) and whether a negative "
        "prompt is read (not by flux). auto loads UNet checkpoints by their model_index.json.")
    dtype: DType = "float16"
    revision: str | None = Field(None, max_length=128)
    defaults: GenerationDefaults = GenerationDefaults()
    limits: ModelLimits = ModelLimits()
    loras: list[LoraAdapter] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    controlnets: list[ControlNet] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="ControlNets a request may name in `control` (sdxl and sd15 pipelines): "
        "each is loaded by a worker the first time a request names it, then kept.",
    )
    prefetch: Prefetch | None = None
    optimizations: Optimizations = Optimizations()

    _safe_source = field_validator("source")(check_source)

    @model_validator(mode="after")
    def _cross_field(self) -> ImageModelSpec:
        d, lim = self.defaults, self.limits
        if d.width * d.height > lim.max_pixels:
            raise ValueError("defaults.width x defaults.height must not exceed limits.maxPixels")
        if d.steps > lim.max_steps:
            raise ValueError("defaults.steps must not exceed limits.maxSteps")
        for message in family_errors(self):
            raise ValueError(message)
        return self


def family_errors(spec: ImageModelSpec) -> list[str]:
    """What the spec asks that its pipeline family cannot do (empty: nothing)."""
    errors = []
    name = spec.source.removeprefix("builtin://") if spec.source.startswith("builtin://") else None
    if name is not None and BUILTIN_FAMILIES.get(name, spec.pipeline) != spec.pipeline:
        errors.append(_builtin_message(name, BUILTIN_FAMILIES[name]))
    facts, d = FAMILIES[spec.pipeline], spec.defaults
    if d.sampler not in facts.samplers:
        errors.append(f"defaults.sampler must be one of {', '.join(facts.samplers)} for "
                      f"pipeline {spec.pipeline}")
    if d.width % facts.side_multiple or d.height % facts.side_multiple:
        errors.append(f"defaults.width and defaults.height must be multiples of "
                      f"{facts.side_multiple} for pipeline {spec.pipeline}")
    if d.negative_prompt and not facts.negative_prompt:
        errors.append(f"pipeline {spec.pipeline} reads no negative prompt: leave "
                      "defaults.negativePrompt empty")
    if spec.controlnets and not facts.controlnet:
        errors.append(_controlnet_family_message())
    for c in spec.controlnets:
        name = c.source.removeprefix("builtin://") if c.source.startswith("builtin://") else None
        fam = BUILTIN_CONTROLNETS.get(name or "", spec.pipeline)
        if fam != spec.pipeline:
            errors.append(f"builtin://{name} fits {FAMILIES[fam].title} model: set pipeline to "
                          f"{fam}")
    return errors


# --- GenerationPool --------------------------------------------------------------------------


class Toleration(KubeModel):
    key: str | None = Field(None, max_length=253)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


SPOT_TOLERATION = Toleration(
    key=naming.TAINT_SPOT, operator="Equal", value="true", effect="NoSchedule"
)


class WarmPool(KubeModel):
    """On-demand workers that keep models loaded; never fewer than minReplicas."""

    model_config = KubeModel.model_config | ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "warm.minReplicas must be less than or equal to warm.maxReplicas",
                    ".minReplicas",
                )
            ]
        }
    )
    min_replicas: int = Field(
        1, ge=0, le=1000, description="The warm pool never has fewer workers than this.")
    max_replicas: int = Field(4, ge=0, le=1000, description="Upper bound of the warm pool.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _min_le_max(self) -> WarmPool:
        if self.min_replicas > self.max_replicas:
            raise ValueError("warm.minReplicas must be less than or equal to warm.maxReplicas")
        return self


class ColdPool(KubeModel):
    """Spot/preemptible overflow workers; scale to zero, wake above the activation lag."""

    max_replicas: int = Field(8, ge=0, le=1000, description="Upper bound of the cold (spot) pool.")
    activation_lag: int = Field(
        5, ge=0, le=1_000_000,
        description="The cold pool scales up from zero only above this consumer lag.")
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {naming.LABEL_CAPACITY_TYPE: naming.CAPACITY_SPOT}
    )
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [SPOT_TOLERATION], max_length=32
    )


class KeyRef(KubeModel):
    name: str = Field(pattern=DNS_LABEL, max_length=253)
    key: str = Field(max_length=253)


class ValueFrom(KubeModel):
    """A value read from a ConfigMap or a Secret in the pool's namespace."""

    model_config = KubeModel.model_config | ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.configMapKeyRef) != has(self.secretKeyRef)",
                    "set exactly one of configMapKeyRef or secretKeyRef",
                )
            ]
        }
    )
    config_map_key_ref: KeyRef | None = None
    secret_key_ref: KeyRef | None = None


ColdWake = Literal["Always", "NearMaxWait", "Never"]
# A tier promising at least this wait (seconds) leaves the cold pool asleep by default until its
# requests approach their max wait: warm workers are expected to catch up within the promise.
PATIENT_WAIT_SECONDS = 120
# NearMaxWait: the cold pool may wake once a tier's oldest request has waited this share of its
# maxWaitSeconds (spot nodes take minutes to come up).
NEAR_MAX_WAIT_FRACTION = 0.5


class Tier(KubeModel):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=20)
    weight: int = Field(ge=1, le=1000)
    max_wait_seconds: int = Field(
        300, ge=1, le=86400,
        description="A request older than this is served before any younger one "
        "(starvation guard).")
    wake_cold: ColdWake | None = Field(
        None,
        description="Whether this tier's backlog may wake and grow the cold (spot) pool: "
        "Always; NearMaxWait (only once its oldest request has waited half of maxWaitSeconds); "
        "Never (warm workers only). Absent: NearMaxWait for a tier that promises "
        f"maxWaitSeconds >= {PATIENT_WAIT_SECONDS} (relax), Always otherwise (turbo, fast).")

    @property
    def cold_wake(self) -> ColdWake:
        """wakeCold, or its default from the tier's promise."""
        if self.wake_cold is not None:
            return self.wake_cold
        return "NearMaxWait" if self.max_wait_seconds >= PATIENT_WAIT_SECONDS else "Always"


DEFAULT_TIER_SPECS: tuple[Tier, ...] = (
    Tier(name="turbo", weight=10, max_wait_seconds=10),
    Tier(name="fast", weight=5, max_wait_seconds=60),
    Tier(name="relax", weight=1, max_wait_seconds=300),
)


def _one_source(field: str) -> JsonDict:
    return cel(
        f"!(has(self.{field}) && has(self.{field}From))",
        f"set at most one of {field} or {field}From",
    )


# Transition rules (oldSelf, checked on update only): a tier's topic or the Kafka cluster moving
# would strand the old topic's backlog, neither consumed nor counted. Adding tiers stays allowed.
_NEW_POOL = "create a new GenerationPool and let this one drain, then delete it"
_DEFAULT_TIER_NAMES = "[" + ", ".join(f"'{t.name}'" for t in DEFAULT_TIER_SPECS) + "]"
QUEUE_TRANSITION_RULES: tuple[JsonDict, ...] = (
    # An absent list means the default tiers (defaulted by the operator, not the API server).
    cel(f"(has(oldSelf.tiers) ? oldSelf.tiers.map(t, t.name) : {_DEFAULT_TIER_NAMES})"
        f".all(n, (has(self.tiers) ? self.tiers.map(t, t.name) : {_DEFAULT_TIER_NAMES})"
        ".exists(m, m == n))",
        "queue.tiers: a tier cannot be removed or renamed (its topic's backlog would be "
        f"stranded); add tiers alongside, or {_NEW_POOL}"),
    cel("has(self.bootstrapServers) == has(oldSelf.bootstrapServers) && "
        "(!has(self.bootstrapServers) || self.bootstrapServers == oldSelf.bootstrapServers)",
        "queue.bootstrapServers cannot change (the backlog on the old Kafka cluster would be "
        f"stranded); {_NEW_POOL}"),
    cel("has(self.bootstrapServersFrom) == has(oldSelf.bootstrapServersFrom) && "
        "(!has(self.bootstrapServersFrom) || "
        "self.bootstrapServersFrom == oldSelf.bootstrapServersFrom)",
        "queue.bootstrapServersFrom cannot change (the backlog on the old Kafka cluster would "
        f"be stranded); {_NEW_POOL}"),
)


class QueueSpec(KubeModel):
    model_config = KubeModel.model_config | ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_one_source("bootstrapServers"),
                                                        *QUEUE_TRANSITION_RULES]}
    )
    bootstrap_servers: str | None = Field(
        None, max_length=1024,
        description="Kafka bootstrap servers; absent both this and bootstrapServersFrom: the "
        "operator's default (IMAGEGEN_KAFKA_BOOTSTRAP).")
    bootstrap_servers_from: ValueFrom | None = None
    partitions: int = Field(6, ge=1, le=1000)
    replication_factor: int = Field(1, ge=1, le=7)
    tiers: list[Tier] = Field(
        default_factory=lambda: list(DEFAULT_TIER_SPECS),
        min_length=1,
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    max_attempts: int = Field(
        3, ge=1, le=100,
        description="A request that fails this many times goes to the dead-letter topic.")


class AutoscalingSpec(KubeModel):
    poll_seconds: int = Field(5, ge=1, le=300)
    target_lag_per_worker: int = Field(2, ge=1, le=100_000)
    target_wait_seconds: int | None = Field(
        None, ge=1, le=86400,
        description="SLO mode: enough workers to drain the backlog within this many seconds.")
    scale_up_stabilization_seconds: int = Field(0, ge=0, le=3600)
    scale_down_stabilization_seconds: int = Field(300, ge=0, le=86400)
    allow_idle_consumers: bool = Field(
        False, description="More consumers than partitions sit idle; allow it only on purpose.")


class BatchingSpec(KubeModel):
    max_batch_size: int = Field(4, ge=1, le=64)
    max_wait_ms: int = Field(50, ge=0, le=10_000)


class CacheSpec(KubeModel):
    model_config = KubeModel.model_config | ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [
            _one_source("redisUrl"),
            # A literal lands in the pool and its worker ConfigMap, readable by many more
            # people than a Secret (docs/security.md).
            cel("!has(self.redisUrl) || !self.redisUrl.matches('^[^:/?#]+://[^/?#@]*:[^/?#@]*@')",
                "cache.redisUrl must not carry a password (it would be readable in the pool and "
                "its worker ConfigMap): put the URL in a Secret and use "
                "cache.redisUrlFrom.secretKeyRef"),
        ]}
    )
    enabled: bool = True
    redis_url: str | None = Field(
        None, max_length=1024,
        description="Redis URL of the result cache and job records; absent both this and "
        "redisUrlFrom: the operator's default (IMAGEGEN_REDIS_URL).")
    redis_url_from: ValueFrom | None = None
    ttl_seconds: int = Field(86400, ge=1, le=30 * 86400)


# Ten years: a longer retention is no retention; remove the field instead.
MAX_RETENTION_DAYS = 3650


class StorageSpec(KubeModel):
    endpoint: str | None = Field(None, max_length=1024)
    bucket: str = Field("imagegen", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    region: str = Field("us-east-1", max_length=64)
    credentials_secret: str | None = Field(
        None, pattern=DNS_LABEL, max_length=253,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; absent: the "
        "operator's default.")
    url_ttl_seconds: int = Field(3600, ge=60, le=7 * 86400)
    retention_days: int | None = Field(
        None, ge=1, le=MAX_RETENTION_DAYS,
        description="Objects under the pool's prefix (<namespace>/<pool>/: images and answer "
        "manifests) expire this many days after they were written, by an S3 lifecycle rule the "
        f"workers set on the bucket (1 to {MAX_RETENTION_DAYS}); absent: kept until deleted "
        "(a rule set before is removed).")


# What a post-generation safety checker may be: an ImageModel-like source holding a diffusers
# StableDiffusionSafetyChecker, or a checker built in code (worker pipelines/safety_models.py).
BUILTIN_CHECKERS: tuple[str, ...] = ("redness",)
CHECKER_SOURCE_PATTERN = (SOURCE_PATTERN.partition("|builtin://")[0]
                          + "|builtin://(" + "|".join(BUILTIN_CHECKERS) + "))$")
# A checker's score is in [0, 1]; an image whose score is above the threshold is flagged.
SAFETY_THRESHOLD_RANGE: tuple[float, float] = (0.0, 1.0)


class SafetyCheckerSpec(KubeModel):
    """An image classifier run on every generated image before it is encoded or stored."""

    source: str = Field(
        pattern=CHECKER_SOURCE_PATTERN, max_length=512,
        json_schema_extra={"x-kubernetes-validations": _source_rules()},
        description="Where the checker comes from, as an ImageModel source: hf://, s3://, "
        "pvc:// or file:// holding a diffusers StableDiffusionSafetyChecker (its folder, or a "
        "model folder with safety_checker/ and feature_extractor/), or builtin://redness (a "
        "classifier built in code whose score is the image's mean redness, for tests and "
        "demos).")
    threshold: float = Field(
        0.5, ge=SAFETY_THRESHOLD_RANGE[0], le=SAFETY_THRESHOLD_RANGE[1],
        description="An image whose score (0 to 1) is above this is blocked. For the diffusers "
        "checker 0.5 is its own decision (score = 0.5 + its margin over the nearest concept's "
        "threshold): higher blocks less, lower more; 1 never blocks (the check still runs and "
        "is counted).")

    _safe_source = field_validator("source")(check_source)


class SafetySpec(KubeModel):
    model_config = KubeModel.model_config | ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [
            cel("!has(self.checker) || !has(self.enabled) || self.enabled",
                "safety.checker is set while safety.enabled is false: enabled=false turns off "
                "every safety check; remove the checker or enable safety"),
        ]}
    )
    enabled: bool = True
    blocklist: list[str] = Field(default_factory=list, max_length=1000)
    checker: SafetyCheckerSpec | None = Field(
        None, description="Post-generation check: every image is classified before it is "
        "encoded; a request with a flagged image is answered blocked (reason and score in its "
        "error) and none of its images is stored or cached. Unset: no check.")

    @model_validator(mode="after")
    def _checker_needs_enabled(self) -> SafetySpec:
        if self.checker is not None and not self.enabled:
            raise ValueError("safety.checker is set while safety.enabled is false: "
                             "enabled=false turns off every safety check")
        return self


class ContentCredentialsSpec(KubeModel):
    secret_name: str = Field(
        pattern=DNS_LABEL, max_length=253,
        description="Secret (type kubernetes.io/tls, as cert-manager issues) in the pool's "
        "namespace: tls.crt the certificate chain in PEM, signing certificate first; tls.key its "
        "private key (EC P-256/P-384/P-521, Ed25519 or RSA). Every image gets a C2PA manifest "
        "signed with it.")


class OutputSpec(KubeModel):
    watermark: bool = Field(
        True, description="Embed the invisible watermark of the SDXL reference pipeline "
        "(invisible-watermark dwtDct, fixed 48-bit message) in every image of at least "
        "256x256 pixels; false: none.")
    quality: int = Field(
        90, ge=1, le=100,
        description="Quality (1 to 100) of webp and jpeg images whose request sets none; png "
        "is lossless and ignores it.")
    content_credentials: ContentCredentialsSpec | None = Field(
        None, description="Content Credentials: embed a C2PA manifest (created by a trained "
        "model, with the generation parameters) signed with this Secret's key in every image. "
        "Unset: none.")


class GpuSpec(KubeModel):
    resource_name: str = Field("nvidia.com/gpu", max_length=253)
    count: int = Field(
        1, ge=0, le=16,
        description="GPUs per worker; 0 runs workers without a GPU (the CPU demo with "
        "builtin://tiny-sdxl).")
    product: str | None = Field(None, max_length=253)


class ResourcesSpec(KubeModel):
    cpu: str = Field("4", pattern=QUANTITY)
    memory: str = Field("32Gi", pattern=QUANTITY)


class EnvVar(KubeModel):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=253)
    value: str = Field("", max_length=32768)


# Kubernetes label syntax: a value of at most 63 characters; a key `[prefix/]name`, the name at
# most 63 characters, the optional prefix a DNS subdomain of at most 253.
LabelValue = Annotated[
    str, Field(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Labels the operator puts on every worker pod (its selectors among them).
OPERATOR_LABELS: tuple[str, ...] = (
    naming.LABEL_NAME, naming.LABEL_INSTANCE, naming.LABEL_COMPONENT, naming.LABEL_MANAGED_BY,
    naming.LABEL_POOL, naming.LABEL_ROLE,
)


def check_label_key(key: str) -> str:
    """A Kubernetes label key that the operator does not own, or a ValueError saying why not."""
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME.match(name) or (
            "/" in key and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix))):
        raise ValueError(f"label key {key!r} is not a Kubernetes label key ([prefix/]name: the "
                         "name at most 63 of A-Z a-z 0-9 - _ . , the prefix a DNS subdomain)")
    if key in OPERATOR_LABELS:
        raise ValueError(f"label key {key!r} is set by the operator (its own labels: "
                         + ", ".join(OPERATOR_LABELS) + ")")
    return key


class WorkerSpec(KubeModel):
    image: str = Field("ghcr.io/imagegen-dev/imagegen-worker:0.1.0", max_length=512)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    heartbeat_seconds: int = Field(5, ge=1, le=300)
    termination_grace_period_seconds: int = Field(
        120, ge=5, le=3600,
        description="Long enough to finish the batch in hand after SIGTERM.")
    service_account_name: str | None = Field(None, pattern=DNS_LABEL, max_length=253)
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    pod_labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Labels added to every worker pod (cost allocation, policies, a dev "
        "runner's selector); the operator's own labels (" + ", ".join(OPERATOR_LABELS) + ") "
        "cannot be set here.",
        json_schema_extra={"x-kubernetes-validations": [cel(
            " && ".join(f"!('{key}' in self)" for key in OPERATOR_LABELS),
            "worker.podLabels cannot set the operator's own labels: " + ", ".join(OPERATOR_LABELS),
        )]},
    )

    @field_validator("pod_labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            check_label_key(key)
        return labels


class GatewayAuth(KubeModel):
    secret_name: str | None = Field(
        None, pattern=DNS_LABEL, max_length=253,
        description="Secret in the pool's namespace whose key `keys.json` holds the API keys "
        "(names, keys or their sha256, allowed tiers, rate limits); mounted read-only. "
        "Required when the gateway is enabled.")


class GatewayResources(KubeModel):
    cpu: str = Field("500m", pattern=QUANTITY)
    memory: str = Field("512Mi", pattern=QUANTITY)


class GatewayWebhooks(KubeModel):
    allowed_hosts: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list, max_length=64,
        description="Webhook targets allowed although they resolve to private, loopback, "
        "link-local or reserved addresses: exact host names or CIDRs (10.0.0.0/8, ::1/128). "
        "Empty: public addresses only (no SSRF through the gateway).")
    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per webhook, the first "
                              "included.")
    backoff_seconds: float = Field(2.0, gt=0, le=3600, description="Pause before the second "
                                   "attempt; doubled for each next one.")
    backoff_max_seconds: float = Field(300.0, gt=0, le=86400, description="Longest pause "
                                       "between attempts.")
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="One attempt's time limit.")


# Gateway pods when neither gateway.replicas nor gateway.autoscaling is set.
GATEWAY_DEFAULT_REPLICAS = 2


class GatewayAutoscaling(KubeModel):
    """The gateway's pods scaled on CPU: a HorizontalPodAutoscaler (autoscaling/v2) owns the
    Deployment's replica count."""

    model_config = KubeModel.model_config | ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [cel(
            "self.minReplicas <= self.maxReplicas",
            "gateway.autoscaling.minReplicas must be less than or equal to "
            "gateway.autoscaling.maxReplicas", ".minReplicas")]})
    min_replicas: int = Field(2, ge=1, le=100, description="Fewest gateway pods.")
    max_replicas: int = Field(10, ge=1, le=100, description="Most gateway pods.")
    target_cpu_utilization_percentage: int = Field(
        70, ge=10, le=200, alias="targetCPUUtilizationPercentage",  # as the HPA spells it
        description="Average CPU use of the gateway pods, in percent of their CPU request "
        "(gateway.resources.cpu), that the autoscaler keeps them at.")

    @model_validator(mode="after")
    def _min_le_max(self) -> GatewayAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("gateway.autoscaling.minReplicas must be less than or equal to "
                             "gateway.autoscaling.maxReplicas")
        return self


_GATEWAY_REPLICAS_EXCLUSIVE = (
    "gateway.replicas (a fixed count) and gateway.autoscaling (scaled on CPU) are exclusive: "
    "set one of them")


class GatewaySpec(KubeModel):
    model_config = KubeModel.model_config | ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [
            cel("!self.enabled || has(self.auth.secretName)",
                "gateway.auth.secretName is required when gateway.enabled is true", ".auth"),
            cel("!has(self.replicas) || !has(self.autoscaling)", _GATEWAY_REPLICAS_EXCLUSIVE,
                ".autoscaling"),
        ]})
    enabled: bool = Field(
        False, description="Run the pool's HTTP gateway (OpenAI-compatible images API and the "
        "async jobs API): a `<pool>-gateway` Deployment and Service.")
    replicas: int | None = Field(
        None, ge=1, le=100,
        description="A fixed number of gateway pods (no GPU); "
        f"{GATEWAY_DEFAULT_REPLICAS} when neither this nor autoscaling is set. Exclusive with "
        "autoscaling.")
    autoscaling: GatewayAutoscaling | None = Field(
        None, description="Scale the gateway pods on CPU between minReplicas and maxReplicas "
        "(a HorizontalPodAutoscaler `<pool>-gateway`, which then owns the Deployment's replica "
        "count). Exclusive with replicas; removing it deletes the autoscaler and the operator "
        "sets replicas again.")
    image: str = Field("ghcr.io/imagegen-dev/imagegen-gateway:0.1.0", max_length=512)
    auth: GatewayAuth = GatewayAuth()
    resources: GatewayResources = GatewayResources()
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Where gateway pods run (no GPU: CPU nodes).")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    max_queue_seconds: float = Field(
        300.0, gt=0, le=86400,
        description="Load shedding: refuse new requests (503 with Retry-After) while the "
        "backlog would take longer than this to serve at the pool's measured throughput.")
    webhooks: GatewayWebhooks = GatewayWebhooks()

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> GatewaySpec:
        if self.enabled and not self.auth.secret_name:
            raise ValueError("gateway.auth.secretName is required when gateway.enabled is true")
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError(_GATEWAY_REPLICAS_EXCLUSIVE)
        return self

    @property
    def fixed_replicas(self) -> int:
        """The replica count the operator sets when no autoscaler owns it."""
        return self.replicas if self.replicas is not None else GATEWAY_DEFAULT_REPLICAS


class GenerationPoolSpec(KubeModel):
    models: list[str] = Field(
        min_length=1, max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"},
        description="ImageModels served by the pool; the first is the default for requests "
        "that name none.",
    )
    worker: WorkerSpec = WorkerSpec()
    gpu: GpuSpec = GpuSpec()
    resources: ResourcesSpec = ResourcesSpec()
    warm: WarmPool = WarmPool()
    cold: ColdPool = ColdPool()
    queue: QueueSpec = QueueSpec()
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    batching: BatchingSpec = BatchingSpec()
    cache: CacheSpec = CacheSpec()
    storage: StorageSpec = StorageSpec()
    safety: SafetySpec = SafetySpec()
    output: OutputSpec = OutputSpec()
    gateway: GatewaySpec = GatewaySpec()
    job_ttl_seconds: int = Field(86400, ge=60, le=30 * 86400)

    @property
    def default_model(self) -> str:
        return self.models[0]

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.queue.tiers]


# --- Status (written by the operator) --------------------------------------------------------


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubeModel):
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class RolePoolStatus(KubeModel):
    desired: int = 0
    replicas: int = 0
    ready: int = 0


class QueueStatus(KubeModel):
    lag: int = 0
    lag_by_tier: dict[str, int] = Field(default_factory=dict)
    partitions: int = 0
    stalled_partitions: list[str] = Field(
        default_factory=list,
        description="Partitions whose backlog has not moved for a while although workers are "
        "ready.")
    oldest_seconds_by_tier: dict[str, int] = Field(
        default_factory=dict,
        description="Seconds the oldest pending request of each tier has waited (estimated "
        "from when the operator saw the end offsets move; low by at most one poll).")


class GatewayStatus(KubeModel):
    url: str | None = Field(None, description="The gateway Service's in-cluster URL.")
    replicas: int = 0
    ready: int = 0


class GenerationPoolStatus(KubeModel):
    model_config = KubeModel.model_config | ConfigDict(extra="ignore")
    observed_generation: int | None = None
    model: str | None = None
    ready: str = Field("0/0", description='"ready/desired" workers, for the READY column.')
    desired: str = Field(
        "0/0", description='"warm/cold" desired replicas, for the wide DESIRED column.')
    replicas: int = 0
    ready_replicas: int = 0
    warm: RolePoolStatus = RolePoolStatus()
    cold: RolePoolStatus = RolePoolStatus()
    queue: QueueStatus = QueueStatus()
    throughput: float = Field(
        0.0, description="Images per minute, summed over fresh heartbeats.")
    busy_workers: int = 0
    images_per_hour: int = Field(
        0, description="Images served in the last hour (generated, plus requests answered from "
        "the cache), from the counters in worker heartbeats.")
    cache_hit_rate: str = Field(
        "-", description='Cache hits / lookups of the last hour ("42%"; "-" without lookups), '
        "for the wide HIT-RATE column.")
    cache_hit_ratio: float | None = Field(
        None, description="The same as a number from 0 to 1; absent without lookups.")
    last_scale_time: str | None = None
    last_scale_reason: str | None = None
    gateway: GatewayStatus | None = None
    conditions: list[Condition] = Field(default_factory=list)


class ImageModelStatus(KubeModel):
    model_config = KubeModel.model_config | ConfigDict(extra="ignore")
    observed_generation: int | None = None
    ready: bool = False
    cached: str = Field(
        "n/a", description="Prefetch state: n/a, Pending, InProgress, Ready or Failed.")
    resolved_source: str | None = None
    used_by: list[str] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
