"""The Kafka topics a pool needs: one per tier, results, dead-letter."""

from __future__ import annotations

from dataclasses import dataclass

from imagegen_api import naming
from imagegen_api.specs import GenerationPoolSpec


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int


def pool_topics(namespace: str, pool: str, spec: GenerationPoolSpec) -> list[TopicSpec]:
    q = spec.queue
    names = [naming.tier_topic(namespace, pool, t.name) for t in q.tiers]
    names += [naming.results_topic(namespace, pool), naming.dlq_topic(namespace, pool)]
    return [TopicSpec(n, q.partitions, q.replication_factor) for n in names]


def tier_topics(namespace: str, pool: str, spec: GenerationPoolSpec) -> dict[str, str]:
    return {t.name: naming.tier_topic(namespace, pool, t.name) for t in spec.queue.tiers}
