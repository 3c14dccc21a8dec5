"""Why a pool is not as asked: a machine-readable reason and a message a person reads.

Pure. The observe and plan steps of a pool pass (pool_observe.py, pool_plan.py) produce these;
status.py turns the first into the `Degraded` condition's reason, so `kubectl describe` and
alerting rules can tell a missing model from an unreachable Kafka without parsing messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Condition reasons of a Degraded pool (the table in docs/operations.md)."""

    INVALID_SPEC = "InvalidSpec"
    MODEL_MISSING = "ModelMissing"
    MODEL_INVALID = "ModelInvalid"
    # A bootstrapServersFrom / redisUrlFrom reference could not be read (Secret or ConfigMap).
    SECRET_MISSING = "SecretMissing"
    KAFKA_NOT_CONFIGURED = "KafkaNotConfigured"
    KAFKA_UNREACHABLE = "KafkaUnreachable"
    IMAGE_NOT_ALLOWED = "ImageNotAllowed"
    # The children cannot be rendered as specified (e.g. two cache claims).
    INVALID_CHILDREN = "InvalidChildren"
    # The model cache claim cannot be mounted where the pool places workers (e.g. RWO).
    CACHE_CLAIM_PLACEMENT = "CacheClaimPlacement"
    APPLY_FAILED = "ApplyFailed"


@dataclass(frozen=True)
class Problem:
    reason: Reason
    message: str

    def __str__(self) -> str:
        return self.message
