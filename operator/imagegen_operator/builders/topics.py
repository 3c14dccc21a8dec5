"""The Kafka topics a pool needs: one per tier, results, dead-letter, with the topic configs the
operator owns (kafka_topics.py creates them and brings existing topics back to these values)."""

from __future__ import annotations

from dataclasses import dataclass, field

from imagegen_api import naming
from imagegen_api.specs import GenerationPoolSpec


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    # Topic-level configs the operator sets (others on the topic are left as they are).
    config: dict[str, str] = field(default_factory=dict)


def tier_topic_config() -> dict[str, str]:
    """A tier topic accepts what a producer following the size contract sends, and no more
    (naming.MAX_MESSAGE_BYTES; workers refuse requests over naming.MAX_REQUEST_BYTES)."""
    return {"max.message.bytes": str(naming.MAX_MESSAGE_BYTES)}


def pool_topics(namespace: str, pool: str, spec: GenerationPoolSpec) -> list[TopicSpec]:
    q = spec.queue
    tiers = [TopicSpec(naming.tier_topic(namespace, pool, t.name), q.partitions,
                       q.replication_factor, tier_topic_config()) for t in q.tiers]
    others = [naming.results_topic(namespace, pool), naming.dlq_topic(namespace, pool)]
    return tiers + [TopicSpec(n, q.partitions, q.replication_factor) for n in others]


def tier_topics(namespace: str, pool: str, spec: GenerationPoolSpec) -> dict[str, str]:
    return {t.name: naming.tier_topic(namespace, pool, t.name) for t in spec.queue.tiers}
