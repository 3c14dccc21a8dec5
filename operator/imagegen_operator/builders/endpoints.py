"""Where a pool's Kafka and Redis come from: the spec's literal, a reference, or the operator's
default — decided here once, for the operator (which connects itself) and the builders (which
hand the same choice to the workers). Pure: a reference is described, never read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imagegen_api import naming
from imagegen_api.specs import GenerationPoolSpec, ValueFrom

from .context import OperatorDefaults

Source = Literal["spec", "reference", "default", "none"]


@dataclass(frozen=True)
class Endpoint:
    """One connection setting. `field` is the spec path of the literal, `env` the operator's
    variable of the default (both for messages)."""

    field: str
    env: str
    literal: str | None = None
    ref: ValueFrom | None = None
    default: str | None = None

    @property
    def source(self) -> Source:
        if self.literal is not None:
            return "spec"
        if self.ref is not None:
            return "reference"
        return "default" if self.default else "none"

    def label(self) -> str:
        """How messages name this setting without echoing a value read from a Secret."""
        if self.ref is not None:
            kind, key = ("Secret", self.ref.secret_key_ref) if self.ref.secret_key_ref else (
                "ConfigMap", self.ref.config_map_key_ref)
            assert key is not None  # ValueFrom guarantees exactly one
            return f"{self.field}From ({kind} {key.name}, key {key.key})"
        return self.field if self.literal is not None else f"the operator's {self.env}"

    def redact(self, text: str, value: str | None) -> str:
        """`text` (an error from a client that knows only the address) with a value read from a
        reference replaced by the reference's name: Secrets never reach status, Events or logs."""
        if self.ref is None or not value or self.literal is not None:
            return text
        return text.replace(value, self.label())

    def value(self, resolved_ref: str | None = None) -> str | None:
        """The address to connect to: the literal, else the reference's value (read by the
        caller), else the operator's default."""
        if self.literal is not None:
            return self.literal
        return resolved_ref or self.default


def kafka(spec: GenerationPoolSpec, defaults: OperatorDefaults) -> Endpoint:
    q = spec.queue
    return Endpoint("spec.queue.bootstrapServers", naming.ENV_KAFKA_BOOTSTRAP,
                    q.bootstrap_servers, q.bootstrap_servers_from, defaults.kafka_bootstrap)


def redis(spec: GenerationPoolSpec, defaults: OperatorDefaults) -> Endpoint:
    c = spec.cache
    return Endpoint("spec.cache.redisUrl", naming.ENV_REDIS_URL, c.redis_url, c.redis_url_from,
                    defaults.redis_url)
