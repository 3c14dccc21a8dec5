"""Topic configs the operator owns (builders/topics.py, kafka_topics.py's pure helpers): tier
topics carry the size contract's max.message.bytes; an existing topic is rewritten only when one
of our values differs, and then keeps the overrides someone else set. The real broker round trip
is tests/integration/test_topics.py."""

from __future__ import annotations

from imagegen_api import naming
from imagegen_api.specs import GenerationPoolSpec
from imagegen_operator.builders.topics import pool_topics
from imagegen_operator.kafka_topics import config_to_write, topic_overrides

LIMIT = str(naming.MAX_MESSAGE_BYTES)


def test_tier_topics_carry_max_message_bytes_and_the_others_do_not() -> None:
    spec = GenerationPoolSpec.model_validate({"models": ["m"]})
    topics = {t.name: t for t in pool_topics("ns", "p", spec)}
    for tier in naming.DEFAULT_TIERS:
        assert topics[naming.tier_topic("ns", "p", tier)].config == {"max.message.bytes": LIMIT}
    assert topics[naming.results_topic("ns", "p")].config == {}
    assert topics[naming.dlq_topic("ns", "p")].config == {}


def test_size_contract_leaves_headroom_over_the_request_limit() -> None:
    assert naming.MAX_REQUEST_BYTES == 1024 * 1024
    assert naming.MAX_MESSAGE_BYTES > naming.MAX_REQUEST_BYTES


def test_config_already_set_is_not_rewritten() -> None:
    assert config_to_write({"max.message.bytes": LIMIT},
                           {"max.message.bytes": LIMIT, "retention.ms": "1"}) is None


def test_differing_config_is_rewritten_keeping_other_overrides() -> None:
    assert config_to_write({"max.message.bytes": LIMIT},
                           {"max.message.bytes": "100", "retention.ms": "86400000"}) == {
        "max.message.bytes": LIMIT, "retention.ms": "86400000"}
    assert config_to_write({"max.message.bytes": LIMIT}, {}) == {"max.message.bytes": LIMIT}


def test_topic_overrides_from_describe_configs_v1_and_v0() -> None:
    v1 = [("max.message.bytes", "100", False, 1, False, []),  # set on the topic
          ("retention.ms", "604800000", False, 5, False, []),  # broker default
          ("cleanup.policy", "delete", False, 4, False, [])]  # broker static config
    assert topic_overrides(v1, 1) == {"max.message.bytes": "100"}
    v0 = [("max.message.bytes", "100", False, False, False),
          ("retention.ms", "604800000", False, True, False)]
    assert topic_overrides(v0, 0) == {"max.message.bytes": "100"}
