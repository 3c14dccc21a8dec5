"""Creates a pool's Kafka topics when missing, grows their partitions to the spec, and keeps the
topic configs the operator owns (TopicSpec.config, e.g. the tier topics' max.message.bytes).

Partitions never shrink (Kafka cannot); a spec asking for fewer is reported, not applied.
Configs: Kafka's AlterConfigs replaces a topic's whole set of overrides, so the write carries the
topic's other overrides (read first) along with ours; nothing an admin set is lost.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from .builders.topics import TopicSpec
from .scaling.kafka_lag import describe_kafka_error

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
REQUEST_TIMEOUT_MS = 10_000
# DescribeConfigs v1+: where a value comes from; 1 is an override set on the topic itself.
DYNAMIC_TOPIC_CONFIG = 1


def config_to_write(desired: dict[str, str], overrides: dict[str, str]) -> dict[str, str] | None:
    """The full override set to write to a topic whose current overrides are `overrides`, or None
    when every desired value is already there. Pure (unit-tested)."""
    if all(overrides.get(k) == v for k, v in desired.items()):
        return None
    return {**overrides, **desired}


def topic_overrides(entries: list[tuple[object, ...]], api_version: int) -> dict[str, str]:
    """Name -> value of a DescribeConfigs resource's entries that are set on the topic itself
    (v0 has an is_default flag where v1+ has the source). Sensitive values are never overrides
    we could read back, so they are skipped (topics have none)."""
    out: dict[str, str] = {}
    for name, value, _read_only, source_or_default, sensitive, *_ in entries:
        own = (not source_or_default) if api_version == 0 else (
            source_or_default == DYNAMIC_TOPIC_CONFIG)
        if own and not sensitive and value is not None:
            out[str(name)] = str(value)
    return out


class KafkaUnavailable(RuntimeError):
    """Kafka could not be reached or refused the request; the message says where and why."""


class TopicManager:
    """One admin connection per bootstrap address, reused across reconciles."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                        client_id="imagegen-operator",
                                        request_timeout_ms=REQUEST_TIMEOUT_MS)
            try:
                await asyncio.wait_for(admin.start(), REQUEST_TIMEOUT_MS / 1000)
            except (KafkaError, OSError, TimeoutError) as err:
                await admin.close()
                raise KafkaUnavailable(
                    f"Kafka at {self.bootstrap} unreachable: {describe_kafka_error(err)}"
                ) from err
            self._admin = admin
        return self._admin

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def ensure(self, topics: list[TopicSpec]) -> list[str]:
        """Create missing topics, add partitions where the spec asks for more. Returns a list of
        human-readable actions taken (empty when everything already matched)."""
        async with self._lock:
            try:
                return await self._ensure(topics)
            except KafkaUnavailable:
                raise
            except (KafkaError, OSError, TimeoutError) as err:
                await self.close()  # reconnect on the next pass
                raise KafkaUnavailable(
                    f"Kafka at {self.bootstrap}: {describe_kafka_error(err)}") from err

    async def _ensure(self, topics: list[TopicSpec]) -> list[str]:
        admin = await self._client()
        described = await asyncio.wait_for(
            admin.describe_topics([t.name for t in topics]), REQUEST_TIMEOUT_MS / 1000)
        partitions = {d["topic"]: len(d["partitions"]) for d in described
                      if d.get("error_code", 0) == 0 and d["partitions"]}
        actions: list[str] = []
        missing = [t for t in topics if t.name not in partitions]
        if missing:
            resp = await asyncio.wait_for(admin.create_topics(
                [NewTopic(t.name, t.partitions, t.replication_factor,
                          topic_configs=dict(t.config)) for t in missing]),
                REQUEST_TIMEOUT_MS / 1000)
            for name, code, *rest in resp.topic_errors:
                if code and code != TOPIC_ALREADY_EXISTS:
                    raise KafkaUnavailable(f"creating topic {name}: error {code} {rest}")
            actions.append("created topics " + ", ".join(t.name for t in missing)
                           + f" ({missing[0].partitions} partitions)")
        grow = {t.name: NewPartitions(t.partitions) for t in topics
                if t.name in partitions and partitions[t.name] < t.partitions}
        if grow:
            await asyncio.wait_for(admin.create_partitions(grow), REQUEST_TIMEOUT_MS / 1000)
            actions.append("added partitions to " + ", ".join(sorted(grow)))
        existing = [t for t in topics if t.name in partitions and t.config]
        if existing:
            actions += await self._align_configs(admin, existing)
        return actions

    async def _align_configs(self, admin: AIOKafkaAdminClient,
                             topics: list[TopicSpec]) -> list[str]:
        """Existing topics whose owned configs differ get them written (with their other
        overrides kept); returns what was changed."""
        described = await asyncio.wait_for(admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t.name) for t in topics]),
            REQUEST_TIMEOUT_MS / 1000)
        overrides: dict[str, dict[str, str]] = {}
        for resp in described:
            for code, message, _type, name, entries in resp.resources:
                if code:
                    raise KafkaUnavailable(f"describing configs of topic {name}: error {code} "
                                           f"{message}")
                overrides[name] = topic_overrides(entries, resp.API_VERSION)
        writes = {t.name: w for t in topics
                  if (w := config_to_write(t.config, overrides.get(t.name, {}))) is not None}
        if not writes:
            return []
        results = await asyncio.wait_for(admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, configs=c) for n, c in writes.items()]),
            REQUEST_TIMEOUT_MS / 1000)
        for resp in results:
            for code, message, _type, name in resp.resources:
                if code:
                    raise KafkaUnavailable(f"altering configs of topic {name}: error {code} "
                                           f"{message}")
        changed = sorted({k for t in topics if t.name in writes for k in t.config})
        return [f"set {', '.join(changed)} on " + ", ".join(sorted(writes))]
