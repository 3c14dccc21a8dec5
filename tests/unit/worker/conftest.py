"""Fixtures for the worker's pure parts. Nothing here talks to Kafka, Redis, S3 or torch.

Fakes: a WorkerConfig for a pool "tiny" in namespace "ns" serving two small models (limits low
enough to hit every rejection class), a token counter that counts whitespace-separated words,
and a manual clock. The tests assert behaviour: what is rejected and why, what is scheduled when,
what may be committed.
"""

from __future__ import annotations

import pytest
from imagegen_api import naming
from imagegen_api.specs import (
    DEFAULT_TIER_SPECS,
    BatchingSpec,
    GenerationDefaults,
    ImageModelSpec,
    ModelLimits,
    SafetySpec,
)
from imagegen_api.workerconfig import KafkaSettings, ModelEntry, WorkerConfig

NS, POOL = "ns", "tiny"


def make_config(**overrides: object) -> WorkerConfig:
    tiers = list(DEFAULT_TIER_SPECS)
    small = ImageModelSpec(
        source="builtin://tiny-sdxl",
        defaults=GenerationDefaults(width=64, height=64, steps=4, guidance=5.0, sampler="euler"),
        limits=ModelLimits(max_pixels=128 * 128, max_steps=8, max_prompt_tokens=10,
                           max_images_per_request=2),
    )
    other = ImageModelSpec(
        source="builtin://tiny-sdxl",
        defaults=GenerationDefaults(width=128, height=128, steps=2, guidance=1.0,
                                    sampler="lcm", negative_prompt="blurry"),
        limits=ModelLimits(max_pixels=256 * 256, max_steps=4),
    )
    fields: dict[str, object] = {
        "namespace": NS,
        "pool": POOL,
        "models": [ModelEntry(name="tiny", spec=small), ModelEntry(name="other", spec=other)],
        "kafka": KafkaSettings(
            bootstrap_servers="127.0.0.1:9092",
            group=naming.consumer_group(NS, POOL),
            tier_topics={t.name: naming.tier_topic(NS, POOL, t.name) for t in tiers},
            results_topic=naming.results_topic(NS, POOL),
            dlq_topic=naming.dlq_topic(NS, POOL),
            tiers=tiers,
            max_attempts=3,
        ),
        "batching": BatchingSpec(max_batch_size=4, max_wait_ms=50),
        "safety": SafetySpec(blocklist=["forbidden thing", "Badword"]),
    }
    fields.update(overrides)
    return WorkerConfig(**fields)  # type: ignore[arg-type]


def word_count(_model: str, text: str) -> int:
    return len(text.split())


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def config() -> WorkerConfig:
    return make_config()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def config_factory() -> object:
    """make_config(**overrides): the pool config with some fields replaced."""
    return make_config


@pytest.fixture
def count_tokens() -> object:
    return word_count
