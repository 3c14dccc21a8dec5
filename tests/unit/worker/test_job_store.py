"""Where job records live and how long (issue 17: idempotency needs a store that does not
evict). Pure: the job store URL derived from the pool's Redis URL, and the record TTL against the
tier topics' retention. The store itself is exercised on the real Redis in
tests/integration/worker/test_job_records.py."""

from __future__ import annotations

from typing import Any

import pytest
from imagegen_api.workerconfig import JobStoreSettings
from imagegen_worker.results import record_ttl
from imagegen_worker.settings import Settings


@pytest.mark.parametrize(("cache_url", "expected"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1"),
    ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/1"),
    ("rediss://:secret@r.example:6380/5", "rediss://:secret@r.example:6380/1"),
    ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=1"),
])
def test_records_default_to_another_database_of_the_cache_instance(cache_url: str,
                                                                   expected: str) -> None:
    assert JobStoreSettings().url(cache_url) == expected


def test_a_job_store_of_its_own_wins() -> None:
    own = JobStoreSettings(redis_url="redis://jobs:6379/0")
    assert own.url("redis://cache:6379/0") == "redis://jobs:6379/0"
    assert JobStoreSettings(db=7).url("redis://c/0") == "redis://c/7"


def test_records_outlive_the_messages_that_can_still_arrive() -> None:
    week = 7 * 86400
    assert record_ttl(86400, week) == week  # the topics keep a week: so do the records
    assert record_ttl(30 * 86400, week) == 30 * 86400  # longer by choice: kept
    assert record_ttl(86400, None) == 86400  # unknown or unlimited retention: the setting


def test_the_job_store_url_comes_from_its_variable(config_factory: Any) -> None:
    base = {"IMAGEGEN_REDIS_URL": "redis://cache:6379/0", "IMAGEGEN_KAFKA_BOOTSTRAP": "k:9092"}
    plain = Settings.from_env(base).resolve(config_factory())
    assert plain.jobs.redis_url is None
    assert plain.jobs.url(plain.cache.redis_url or "") == "redis://cache:6379/1"
    own = Settings.from_env({**base, "IMAGEGEN_JOBS_REDIS_URL": "redis://jobs:6379/0"})
    resolved = own.resolve(config_factory())
    assert resolved.jobs.url(resolved.cache.redis_url or "") == "redis://jobs:6379/0"
    pinned = config_factory(jobs=JobStoreSettings(redis_url="redis://cfg/2"))
    assert own.resolve(pinned).jobs.redis_url == "redis://cfg/2"  # the config wins
