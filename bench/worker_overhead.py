"""Benchmark (not a test): what the worker adds around the pipeline, on the local stack.

Starts one real `imagegen-worker run` (builtin://tiny-sdxl on the CPU, 64x64, 2 steps) for a
fresh pool, then measures, one request at a time so that queueing does not blur the figures:

  baseline    raw Kafka round trip on loopback: produce (acks=all) → a consumer receives it.
              Every request crosses Kafka twice (request in, result out), so ~2x this is the
              floor of any Kafka-fed worker.
  cache hit   client submit → result received, for a request answered from the Redis cache
              (validate, job record, cache lookup, presign, job record, publish, commit).
  generated   end-to-end minus the pipeline's own time (generate_ms): orchestration overhead of
              a request that is generated (job records, scheduling, encode, upload to S3,
              publish). batching.maxWaitMs is 0 here; a real pool adds up to its value.

Usage: .venv/bin/python bench/worker_overhead.py [--requests 200] [--json]
Endpoints come from IMAGEGEN_KAFKA_BOOTSTRAP / IMAGEGEN_REDIS_URL / IMAGEGEN_S3_ENDPOINT and
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else from `dev/stack env --json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from imagegen_api import naming
from imagegen_api.messages import GenerationRequest
from imagegen_api.specs import DEFAULT_TIER_SPECS, BatchingSpec, GenerationDefaults, ImageModelSpec
from imagegen_api.workerconfig import KafkaSettings, ModelEntry, StorageSettings, WorkerConfig
from imagegen_client import ImagegenClient, new_request_id

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"


def stack_env() -> None:
    if os.environ.get(naming.ENV_KAFKA_BOOTSTRAP) and os.environ.get(naming.ENV_REDIS_URL):
        return
    out = subprocess.run([str(ROOT / "dev" / "stack"), "env", "--json"], check=True,
                         capture_output=True, text=True).stdout
    os.environ.update(json.loads(out))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 50), 2),
            "p99_ms": round(pct(values, 99), 2), "mean_ms": round(statistics.fmean(values), 2)}


async def create_topics(bootstrap: str, names: list[str], partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def kafka_baseline(bootstrap: str, n: int) -> list[float]:
    topic = f"bench.baseline.{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=50,
                                enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        samples = []
        for i in range(n + 10):
            t0 = time.perf_counter()
            await producer.send_and_wait(topic, value=b'{"ping":%d}' % i, key=b"k")
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                if batch.get(tp):
                    break
            if i >= 10:  # warm-up
                samples.append((time.perf_counter() - t0) * 1000)
        return samples
    finally:
        await consumer.stop()
        await producer.stop()


def worker_config(pool: str) -> WorkerConfig:
    tiers = list(DEFAULT_TIER_SPECS)
    spec = ImageModelSpec(source="builtin://tiny-sdxl", dtype="float32",
                          defaults=GenerationDefaults(width=64, height=64, steps=2))
    return WorkerConfig(
        namespace=NAMESPACE, pool=pool, models=[ModelEntry(name="tiny", spec=spec)],
        kafka=KafkaSettings(
            group=naming.consumer_group(NAMESPACE, pool),
            tier_topics={t.name: naming.tier_topic(NAMESPACE, pool, t.name) for t in tiers},
            results_topic=naming.results_topic(NAMESPACE, pool),
            dlq_topic=naming.dlq_topic(NAMESPACE, pool), tiers=tiers),
        batching=BatchingSpec(max_batch_size=4, max_wait_ms=0),
        storage=StorageSettings(bucket="imagegen-bench"),
    )


def start_worker(config_path: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, naming.ENV_WORKER_CONFIG: str(config_path),
           naming.ENV_HTTP_PORT: str(port), naming.ENV_POD_NAME: "bench-worker",
           "IMAGEGEN_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "IMAGEGEN_LOG_LEVEL": "WARNING"}
    exe = Path(sys.executable).with_name("imagegen-worker")
    proc = subprocess.Popen([str(exe), "run"], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited early, see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise SystemExit(f"worker not ready, see {log}")


async def one_by_one(client: ImagegenClient, reqs: list[GenerationRequest]
                     ) -> list[tuple[float, float, bool]]:
    """(end-to-end ms, generate ms, cache hit) per request, sent one at a time."""
    out = []
    for req in reqs:
        t0 = time.perf_counter()
        [rid] = await client.submit([req])
        res = (await client.wait([rid], within=60))[rid]
        e2e = (time.perf_counter() - t0) * 1000
        if res.status != "succeeded":
            raise SystemExit(f"request failed: {res}")
        out.append((e2e, res.timings.generate_ms, res.cache_hit))
    return out


async def main(n: int, as_json: bool) -> None:
    stack_env()
    bootstrap = os.environ[naming.ENV_KAFKA_BOOTSTRAP]
    pool = f"bench-{uuid.uuid4().hex[:6]}"
    config = worker_config(pool)
    await create_topics(bootstrap, [*config.kafka.tier_topics.values(),
                                    config.kafka.results_topic, config.kafka.dlq_topic], 3)
    tmp = Path(tempfile.mkdtemp(prefix="imagegen-bench-"))
    config_path = tmp / "worker.json"
    config_path.write_text(config.dump_json())

    baseline = await kafka_baseline(bootstrap, n)
    proc, _port = start_worker(config_path, tmp / "worker.log")
    try:
        async with ImagegenClient(bootstrap, NAMESPACE, pool) as client:
            warm = [GenerationRequest(request_id=new_request_id("warm"), prompt="warm up",
                                      tier="turbo") for _ in range(5)]
            await one_by_one(client, warm)
            # A run-unique prompt: the Redis cache outlives runs, and "generated" must generate.
            run_tag = uuid.uuid4().hex[:8]
            generated = await one_by_one(client, [
                GenerationRequest(request_id=new_request_id("gen"),
                                  prompt=f"a fox {i} {run_tag}", seed=i, tier="turbo")
                for i in range(n)])
            hits = await one_by_one(client, [
                GenerationRequest(request_id=new_request_id("hit"),
                                  prompt=f"a fox {i} {run_tag}", seed=i, tier="turbo")
                for i in range(n)])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    assert all(hit for _, _, hit in hits) and not any(hit for _, _, hit in generated)
    report = {
        "platform": (f"{platform.machine()} {os.cpu_count()} cpu, "
                     f"python {platform.python_version()}"),
        "baseline_kafka_round_trip": summary(baseline),
        "cache_hit_round_trip": summary([e for e, _, _ in hits]),
        "generated_end_to_end": summary([e for e, _, _ in generated]),
        "generated_pipeline_time": summary([g for _, g, _ in generated]),
        "generated_overhead": summary([e - g for e, g, _ in generated]),
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(f"worker overhead on loopback ({report['platform']}), {n} sequential requests each\n")
    print(f"{'measure':<34}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for key, label in [
        ("baseline_kafka_round_trip", "baseline: Kafka produce→consume"),
        ("cache_hit_round_trip", "cache hit: submit→result"),
        ("generated_end_to_end", "generated: submit→result"),
        ("generated_pipeline_time", "  of which pipeline (generate_ms)"),
        ("generated_overhead", "  orchestration overhead"),
    ]:
        s = report[key]
        print(f"{label:<34}{s['p50_ms']:>10}{s['p99_ms']:>10}{s['mean_ms']:>10}")
    b = report["baseline_kafka_round_trip"]["p50_ms"]
    print(f"\ncache hit p50 = {report['cache_hit_round_trip']['p50_ms'] / b:.1f}x the Kafka "
          f"round trip; overhead p50 = {report['generated_overhead']['p50_ms'] / b:.1f}x "
          "(a request crosses Kafka twice)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()
    asyncio.run(main(ns.requests, ns.json))
