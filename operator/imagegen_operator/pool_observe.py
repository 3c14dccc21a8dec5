"""The observe step of a GenerationPool pass: gathers everything the plan needs (pool_plan.py).

ImageModels, worker Deployments and worker pods come from Kopf indexes (kept current by watch
events, handlers.py): no GET or LIST per pass. The Kafka bootstrap and Redis URL are resolved by
builders.endpoints (a reference is read through the API here); then the pool's topics are
ensured when due (they must exist before lag can be read), the consumer lag is read, and the
workers' heartbeats. Every call is bounded (k8s, kafka_lag, kafka_topics, heartbeats); a failure
becomes a Problem or an error text in the state, never an exception out of here.

Errors from the Kafka and Redis clients name the address they used: when that address was read
from a Secret or ConfigMap, it is replaced by the reference's name before it goes anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from imagegen_api import naming
from imagegen_api.base import first_error
from imagegen_api.messages import Heartbeat
from imagegen_api.specs import GenerationPoolSpec, ImageModelSpec, ValueFrom
from pydantic import ValidationError

from . import builders
from .builders import endpoints
from .heartbeats import HeartbeatsUnavailable
from .k8s import KubeError
from .kafka_topics import KafkaUnavailable
from .pool_plan import GATEWAY, DeploymentView, KafkaView, PodView, PoolMemory, PoolState
from .problems import Problem, Reason
from .runtime import Runtime
from .scaling.drain_order import DELETION_COST
from .scaling.kafka_lag import LagUnavailable
from .scaling.lag import LagSnapshot

log = logging.getLogger(__name__)

Index = Mapping[Any, Collection[Any]]


@dataclass(frozen=True)
class Indexes:
    """The Kopf indexes a pass reads (handlers.py fills them from watch events)."""

    # (namespace, name) → [ImageModel spec]
    models: Index
    # (namespace, Deployment name) → [DeploymentView]
    deployments: Index
    # (namespace, pool) → [PodView, …]
    pods: Index
    # (namespace, claim) → [access modes]
    claims: Index = field(default_factory=dict)
    # (namespace, HPA name) → [True]: the pools' HorizontalPodAutoscalers (the gateway's)
    hpas: Index = field(default_factory=dict)


def deployment_view(body: Mapping[str, Any]) -> DeploymentView:
    st = body.get("status") or {}
    return DeploymentView(desired=int((body.get("spec") or {}).get("replicas") or 0),
                          replicas=int(st.get("replicas") or 0),
                          ready=int(st.get("readyReplicas") or 0),
                          replicas_applied=applies_replicas(body))


def applies_replicas(body: Mapping[str, Any]) -> bool:
    """Does the operator's server-side apply manage spec.replicas (metadata.managedFields)?"""
    for entry in (body.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == naming.FIELD_MANAGER and entry.get("operation") == "Apply":
            fields = ((entry.get("fieldsV1") or {}).get("f:spec") or {})
            if "f:replicas" in fields:
                return True
    return False


def pod_view(body: Mapping[str, Any]) -> PodView:
    meta = body.get("metadata") or {}
    st = body.get("status") or {}
    return PodView(
        name=str(meta.get("name")),
        role=(meta.get("labels") or {}).get(naming.LABEL_ROLE),
        phase=st.get("phase"),
        ready=any(c.get("type") == "Ready" and c.get("status") == "True"
                  for c in st.get("conditions") or []),
        deletion_cost=(meta.get("annotations") or {}).get(DELETION_COST),
        deleting=bool(meta.get("deletionTimestamp")),
    )


async def observe(rt: Runtime, body: Mapping[str, Any], memory: PoolMemory,
                  indexes: Indexes, now: float) -> PoolState:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    state = PoolState(
        namespace=namespace, name=name, uid=meta["uid"], generation=meta.get("generation"),
        labels=dict(meta.get("labels") or {}), spec=dict(body.get("spec") or {}),
        status=dict(body.get("status") or {}), now=now)
    try:
        spec = GenerationPoolSpec.model_validate(state.spec)
    except ValidationError:
        return state  # the plan reports the invalid spec
    problems: list[Problem] = []
    models = _models(indexes.models, namespace, spec, problems)

    kafka_ep = endpoints.kafka(spec, rt.config.defaults)
    redis_ep = endpoints.redis(spec, rt.config.defaults)
    bootstrap = await _resolve(rt, namespace, kafka_ep, problems)
    redis_url = await _resolve(rt, namespace, redis_ep, problems)
    kafka = await _kafka(rt, namespace, name, spec, memory, kafka_ep, bootstrap)
    heartbeats: tuple[Heartbeat, ...] = ()
    if redis_url:
        try:
            heartbeats = tuple(await rt.heartbeats(redis_url).read(namespace, name, now))
        except HeartbeatsUnavailable as err:  # heartbeats only feed throughput
            log.warning("heartbeats of %s/%s unreadable from %s: %s", namespace, name,
                        redis_ep.label(), err)

    deployments = {role: _one(indexes.deployments,
                              (namespace, naming.deployment_name(name, role)))
                   for role in naming.ROLES}
    deployments[GATEWAY] = _one(indexes.deployments, (namespace, naming.gateway_name(name)))
    pods = tuple(indexes.pods.get((namespace, name)) or ())
    claim_modes = {claim: tuple(modes) for claim in _claims(models)
                   if (modes := _one(indexes.claims, (namespace, claim))) is not None}
    return PoolState(
        namespace=namespace, name=name, uid=state.uid, generation=state.generation,
        labels=state.labels, spec=state.spec, status=state.status, now=now,
        models=models, problems=tuple(problems), kafka=kafka, heartbeats=heartbeats,
        deployments=deployments, pods=pods, claim_modes=claim_modes,
        gateway_hpa=_one(indexes.hpas, (namespace, naming.gateway_name(name))) is not None)


def _claims(models: Mapping[str, ImageModelSpec]) -> set[str]:
    """The model-cache claims the pool's models name (prefetch claims, pvc:// sources)."""
    found = {m.prefetch.claim_name for m in models.values() if m.prefetch is not None}
    found |= {m.source.removeprefix("pvc://").split("/", 1)[0] for m in models.values()
              if m.source.startswith("pvc://")}
    return found


def _one(index: Index, key: Any) -> Any:
    found = index.get(key)
    return next(iter(found), None) if found else None


def _models(index: Index, namespace: str, spec: GenerationPoolSpec,
            problems: list[Problem]) -> dict[str, ImageModelSpec]:
    models: dict[str, ImageModelSpec] = {}
    for model in spec.models:
        raw = _one(index, (namespace, model))
        if raw is None:
            problems.append(Problem(Reason.MODEL_MISSING,
                                    f"ImageModel {model!r} not found in namespace {namespace}"))
            continue
        try:
            models[model] = ImageModelSpec.model_validate(raw)
        except ValidationError as err:
            problems.append(Problem(Reason.MODEL_INVALID,
                                    f"ImageModel {model!r} is invalid: {first_error(err)}"))
    return models


async def _resolve(rt: Runtime, namespace: str, ep: endpoints.Endpoint,
                   problems: list[Problem]) -> str | None:
    """The address the operator connects to; None when unset or its reference is unreadable
    (no fallback to the default then: the workers read the same reference and would not)."""
    if ep.ref is None:
        return ep.value()
    try:
        return ep.value(await _read_ref(rt, namespace, ep.ref))
    except KubeError as err:
        problems.append(Problem(Reason.SECRET_MISSING, f"{ep.label()}: {err}"))
        return None


async def _read_ref(rt: Runtime, namespace: str, ref: ValueFrom) -> str:
    if ref.secret_key_ref is not None:
        return await rt.kube.read_key("Secret", namespace, ref.secret_key_ref.name,
                                      ref.secret_key_ref.key)
    assert ref.config_map_key_ref is not None
    return await rt.kube.read_key("ConfigMap", namespace, ref.config_map_key_ref.name,
                                  ref.config_map_key_ref.key)


async def _kafka(rt: Runtime, namespace: str, name: str, spec: GenerationPoolSpec,
                 memory: PoolMemory, ep: endpoints.Endpoint, bootstrap: str | None) -> KafkaView:
    if bootstrap is None:
        return KafkaView(label=ep.label(), configured=False,
                         lag_error="no Kafka bootstrap servers configured")
    topics = builders.pool_topics(namespace, name, spec)
    key = (bootstrap, tuple(t.name for t in topics), spec.queue.partitions)
    actions: tuple[str, ...] | None = None
    topics_error: str | None = None
    if memory.topics_ensured != key:  # created once per (bootstrap, names, partitions)
        try:
            actions = tuple(await rt.topics(bootstrap).ensure(topics))
        except KafkaUnavailable as err:
            topics_error = ep.redact(str(err), bootstrap)
    lag: LagSnapshot | None = None
    lag_error: str | None = None
    try:
        lag = await rt.lag(bootstrap).read(naming.consumer_group(namespace, name),
                                           builders.tier_topics(namespace, name, spec))
        rt.metrics.lag_read_seconds.observe(lag.read_ms / 1000)
    except LagUnavailable as err:
        lag_error = ep.redact(str(err), bootstrap)
    return KafkaView(label=ep.label(), configured=True, topics_key=key, topics_actions=actions,
                     topics_error=topics_error, lag=lag, lag_error=lag_error)
