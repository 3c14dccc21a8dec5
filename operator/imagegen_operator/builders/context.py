"""What the builders need to know about one pool, gathered by the handler before building.

Everything here is plain data: the builders are pure functions of a PoolContext.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imagegen_api import naming
from imagegen_api.specs import GenerationPoolSpec, ImageModelSpec, KeyRef, ValueFrom


@dataclass(frozen=True)
class OperatorDefaults:
    """Connection defaults of the operator itself (its environment), used where a pool sets none.

    Secrets are referenced, never copied: the worker gets credentials from the Secret directly.
    """

    kafka_bootstrap: str | None = None
    redis_url: str | None = None
    # A Secret (in each pool's namespace) holding redis_url: workers then read the default URL
    # from it by secretKeyRef, so a password never becomes a plain env value.
    redis_url_secret: str | None = None
    redis_url_secret_key: str = "url"
    s3_endpoint: str | None = None
    s3_credentials_secret: str | None = None
    worker_image: str | None = None
    # ServiceAccount for worker pods that set none (the chart's token-less imagegen-worker).
    worker_service_account: str | None = None


@dataclass(frozen=True)
class Owner:
    api_version: str
    kind: str
    name: str
    uid: str

    def reference(self) -> dict[str, object]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class PoolContext:
    namespace: str
    name: str
    uid: str
    spec: GenerationPoolSpec
    # ImageModel name -> spec, for every name in spec.models (the handler refuses missing ones).
    models: dict[str, ImageModelSpec]
    # Replicas decided by scaling.policy (the one place that decides them, bounds included).
    warm_replicas: int
    cold_replicas: int
    # The pool's own metadata.labels: some are propagated to worker pods (the dev runner label).
    pool_labels: dict[str, str] = field(default_factory=dict)
    defaults: OperatorDefaults = OperatorDefaults()
    # The `<pool>-gateway` Deployment exists: with gateway.autoscaling its replica count is
    # then the HPA's, left out of what the operator applies.
    gateway_exists: bool = False

    @property
    def owner(self) -> Owner:
        return Owner(naming.API_VERSION, naming.GENERATIONPOOL_KIND, self.name, self.uid)


def env_from(name: str, ref: ValueFrom) -> dict[str, object]:
    """An EnvVar that reads a ConfigMap or Secret key (ValueFrom guarantees exactly one is set)."""
    if ref.secret_key_ref is not None:
        return {"name": name, "valueFrom": {"secretKeyRef": _key(ref.secret_key_ref)}}
    assert ref.config_map_key_ref is not None
    return {"name": name, "valueFrom": {"configMapKeyRef": _key(ref.config_map_key_ref)}}


def _key(ref: KeyRef) -> dict[str, object]:
    return {"name": ref.name, "key": ref.key}
