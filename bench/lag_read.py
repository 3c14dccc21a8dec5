"""Benchmark (not a test): how long one autoscaler lag read takes, on the local stack's Kafka.

Creates three tier topics with 100 partitions in total (34/33/33), produces a few thousand
messages spread over all partitions, commits a consumer group at partial offsets (some partitions
never committed), then times:

  reused     LagReader kept open across reads, as the operator does every poll;
  fresh      baseline, same run: a new LagReader per read (connect, metadata, read, close).

Each read is checked against the lag this script produced and committed. Goal: reused p95 < 50 ms.

Usage: .venv/bin/python bench/lag_read.py [--reads 50] [--messages 3000] [--json]
Kafka comes from IMAGEGEN_KAFKA_BOOTSTRAP, else from `dev/stack env --json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from imagegen_api import naming
from imagegen_operator.scaling.kafka_lag import LagReader

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = {"turbo": 34, "fast": 33, "relax": 33}


def bootstrap_address() -> str:
    if not os.environ.get(naming.ENV_KAFKA_BOOTSTRAP):
        out = subprocess.run(
            [str(ROOT / "dev" / "stack"), "env", "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        os.environ.update(json.loads(out))
    return os.environ[naming.ENV_KAFKA_BOOTSTRAP]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(pct(values, 50), 2),
        "p95_ms": round(pct(values, 95), 2),
        "max_ms": round(max(values), 2),
        "mean_ms": round(statistics.fmean(values), 2),
    }


async def prepare(bootstrap: str, prefix: str, messages: int) -> tuple[dict[str, str], str, int]:
    """Topics, messages and a group's commits; returns (tier -> topic, group, expected lag)."""
    tiers = {tier: f"{prefix}.{tier}" for tier in PARTITIONS}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(tiers[t], num_partitions=n, replication_factor=1)
                for t, n in PARTITIONS.items()
            ]
        )
    finally:
        await admin.close()

    tps = [(tiers[t], p) for t, n in PARTITIONS.items() for p in range(n)]
    counts = dict.fromkeys(tps, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(messages):
            tp = tps[(i * 7) % len(tps)]  # uneven spread over all partitions
            counts[tp] += 1
            futures.append(await producer.send(tp[0], b"x" * 64, partition=tp[1]))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    # Commit half of each partition, except every fifth partition which is never committed.
    group = f"{prefix}.group"
    commits = {TopicPartition(t, p): n // 2 for (t, p), n in counts.items() if p % 5}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(commits))
        await consumer.commit(commits)
    finally:
        await consumer.stop()
    expected = sum(n - commits.get(TopicPartition(*tp), 0) for tp, n in counts.items())
    return tiers, group, expected


async def cleanup(bootstrap: str, tiers: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(tiers.values()))
    finally:
        await admin.close()


async def timed_reads(
    bootstrap: str, group: str, tiers: dict[str, str], expected: int, reads: int, reuse: bool
) -> list[float]:
    times: list[float] = []
    reader = LagReader(bootstrap)
    try:
        if reuse:
            await reader.read(group, tiers)  # connect once, as the operator does at startup
        for _ in range(reads):
            started = time.perf_counter()
            if not reuse:
                reader = LagReader(bootstrap)
            snap = await reader.read(group, tiers)
            if not reuse:
                await reader.close()
            times.append((time.perf_counter() - started) * 1000)
            assert snap.total == expected, (snap.total, expected)
            assert snap.partitions_total == sum(PARTITIONS.values())
    finally:
        await reader.close()
    return times


async def main(reads: int, messages: int, as_json: bool) -> None:
    bootstrap = bootstrap_address()
    tiers, group, expected = await prepare(bootstrap, f"bench-lag-{uuid.uuid4().hex[:6]}", messages)
    try:
        reused = await timed_reads(bootstrap, group, tiers, expected, reads, reuse=True)
        fresh = await timed_reads(bootstrap, group, tiers, expected, reads, reuse=False)
    finally:
        await cleanup(bootstrap, tiers)
    result = {
        "bootstrap": bootstrap,
        "partitions": sum(PARTITIONS.values()),
        "messages": messages,
        "lag": expected,
        "reused": summary(reused),
        "fresh_client_per_read": summary(fresh),
    }
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"lag read: {result['partitions']} partitions, {messages} messages, lag {expected}")
    for name in ("reused", "fresh_client_per_read"):
        s = result[name]
        assert isinstance(s, dict)
        print(
            f"  {name:<22} n={s['n']:<3} p50 {s['p50_ms']:>7.2f} ms  p95 {s['p95_ms']:>7.2f} ms"
            f"  max {s['max_ms']:>7.2f} ms  mean {s['mean_ms']:>7.2f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reads", type=int, default=50)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()
    asyncio.run(main(ns.reads, ns.messages, ns.json))
