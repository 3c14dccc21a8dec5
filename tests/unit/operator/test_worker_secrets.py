"""How the operator's default Redis URL reaches worker pods (builders/workload.py): by
secretKeyRef when the operator names a Secret for it, as a plain value only without a password;
a password never lands in a pod spec. See docs/security.md."""

from __future__ import annotations

from typing import Any

import pytest
from imagegen_api import naming
from imagegen_api.specs import GenerationPoolSpec, ImageModelSpec
from imagegen_operator import builders
from imagegen_operator.builders.context import OperatorDefaults, PoolContext
from imagegen_operator.config import OperatorConfig

TINY = ImageModelSpec.model_validate({"source": "builtin://tiny-sdxl"})


def worker_env(defaults: OperatorDefaults, pool: dict[str, Any] | None = None
               ) -> dict[str, dict[str, Any]]:
    spec = GenerationPoolSpec.model_validate({"models": ["tiny"], **(pool or {})})
    ctx = PoolContext(namespace="ns1", name="p1", uid="u", spec=spec, models={"tiny": TINY},
                      warm_replicas=1, cold_replicas=0, defaults=defaults)
    deploy = next(c for c in builders.pool_children(ctx)
                  if c["kind"] == "Deployment" and c["metadata"]["name"] == "p1-warm")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_default_url_without_password_is_a_plain_value() -> None:
    env = worker_env(OperatorDefaults(redis_url="redis://redis:6379/0"))
    assert env[naming.ENV_REDIS_URL] == {"name": naming.ENV_REDIS_URL,
                                        "value": "redis://redis:6379/0"}


def test_default_url_goes_by_secret_reference_when_the_operator_names_one() -> None:
    env = worker_env(OperatorDefaults(redis_url="redis://:s3cret@redis:6379/0",
                                      redis_url_secret="imagegen-redis",
                                      redis_url_secret_key="url"))
    assert env[naming.ENV_REDIS_URL] == {"name": naming.ENV_REDIS_URL, "valueFrom": {
        "secretKeyRef": {"name": "imagegen-redis", "key": "url"}}}
    assert "s3cret" not in repr(env)


def test_default_url_with_password_and_no_secret_is_refused_naming_the_fix() -> None:
    with pytest.raises(builders.BuildError, match="IMAGEGEN_REDIS_URL_SECRET") as err:
        worker_env(OperatorDefaults(redis_url="redis://user:s3cret@redis:6379/0"))
    assert "s3cret" not in str(err.value)
    assert "spec.cache.redisUrlFrom" in str(err.value)


def test_pool_reference_wins_over_the_default() -> None:
    env = worker_env(OperatorDefaults(redis_url="redis://:s3cret@redis:6379/0"),
                     {"cache": {"redisUrlFrom": {"secretKeyRef": {"name": "r", "key": "u"}}}})
    assert env[naming.ENV_REDIS_URL]["valueFrom"] == {"secretKeyRef": {"name": "r", "key": "u"}}


def test_operator_reads_the_worker_secret_settings() -> None:
    cfg = OperatorConfig.from_env({"IMAGEGEN_OPERATOR_STANDALONE": "1",
                                   "IMAGEGEN_REDIS_URL_SECRET": "imagegen-redis",
                                   "IMAGEGEN_REDIS_URL_SECRET_KEY": "redisUrl"})
    assert (cfg.defaults.redis_url_secret, cfg.defaults.redis_url_secret_key) == (
        "imagegen-redis", "redisUrl")
    assert OperatorConfig.from_env({"IMAGEGEN_OPERATOR_STANDALONE": "1"}
                                   ).defaults.redis_url_secret_key == "url"
