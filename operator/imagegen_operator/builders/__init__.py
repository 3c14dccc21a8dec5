"""Pure builders: parsed specs → desired Kubernetes objects and Kafka topics. No I/O here."""

from .context import OperatorDefaults, Owner, PoolContext
from .prefetch import cache_pvc, prefetch_job, spec_hash
from .topics import TopicSpec, pool_topics, tier_topics
from .workerconfig import config_hash, worker_config
from .workload import BuildError, cache_claim, pool_children

__all__ = [
    "BuildError",
    "OperatorDefaults",
    "Owner",
    "PoolContext",
    "TopicSpec",
    "cache_claim",
    "cache_pvc",
    "config_hash",
    "pool_children",
    "pool_topics",
    "prefetch_job",
    "spec_hash",
    "tier_topics",
    "worker_config",
]
