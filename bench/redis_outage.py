"""Benchmark (not a test): a worker's throughput while its Redis is frozen, as a fraction of
normal (issue 17, item 5). On the local stack's Kafka and MinIO, with a redis-server of its own
(never the stack's, which other runs share) that it SIGSTOPs.

One real `imagegen-worker run` (builtin://tiny-sdxl on the CPU, 64x64, 2 steps), its cache, job
records and heartbeats on the private Redis. Three phases, each a burst of --requests unseeded
requests (every one generated, none a cache hit) submitted at once, timed from submit to the last
result: normal, Redis frozen (SIGSTOP: connections hang, nothing answers), Redis thawed again.
Every request must succeed in every phase: generation goes on without the job records.

Usage: .venv/bin/python bench/redis_outage.py [--requests 40] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(ROOT))

from imagegen_api import naming  # noqa: E402
from imagegen_api.messages import GenerationRequest  # noqa: E402
from imagegen_client import ImagegenClient, new_request_id  # noqa: E402

from bench.worker_overhead import (  # noqa: E402
    NAMESPACE,
    create_topics,
    stack_env,
    start_worker,
    worker_config,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"redis-server did not start on port {port}")


async def burst(client: ImagegenClient, n: int, tag: str) -> tuple[float, int]:
    """Seconds from submitting `n` requests at once to the last result; failures."""
    reqs = [GenerationRequest(request_id=new_request_id(tag), prompt=f"a fox {tag} {i}",
                              tier="turbo") for i in range(n)]
    t0 = time.perf_counter()
    ids = await client.submit(reqs)
    results = await client.wait(ids, within=600)
    seconds = time.perf_counter() - t0
    if len(results) != n:
        raise SystemExit(f"{tag}: {n - len(results)} requests unanswered")
    return seconds, sum(r.status != "succeeded" for r in results.values())


async def main(n: int, as_json: bool) -> None:
    stack_env()
    bootstrap = os.environ[naming.ENV_KAFKA_BOOTSTRAP]
    tmp = Path(tempfile.mkdtemp(prefix="imagegen-redis-outage-"))
    port = free_port()
    redis = start_redis(port, tmp)
    os.environ[naming.ENV_REDIS_URL] = f"redis://127.0.0.1:{port}/0"
    os.environ.pop(naming.ENV_JOBS_REDIS_URL, None)  # job records: database 1 of that Redis
    pool = f"redis-{uuid.uuid4().hex[:6]}"
    config = worker_config(pool)
    await create_topics(bootstrap, [*config.kafka.tier_topics.values(),
                                    config.kafka.results_topic, config.kafka.dlq_topic], 3)
    config_path = tmp / "worker.json"
    config_path.write_text(config.dump_json())
    proc, _ = start_worker(config_path, tmp / "worker.log")
    phases: dict[str, dict[str, float]] = {}
    try:
        async with ImagegenClient(bootstrap, NAMESPACE, pool) as client:
            await burst(client, 8, "warm")
            for phase in ("normal", "frozen", "thawed"):
                if phase == "frozen":
                    redis.send_signal(signal.SIGSTOP)
                elif phase == "thawed":
                    redis.send_signal(signal.SIGCONT)
                seconds, failed = await burst(client, n, phase)
                phases[phase] = {"seconds": round(seconds, 2),
                                 "requests_per_second": round(n / seconds, 2),
                                 "failed": failed}
    finally:
        redis.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        redis.kill()
        redis.wait()
    normal = phases["normal"]["requests_per_second"]
    report = {
        "platform": (f"{platform.machine()} {os.cpu_count()} cpu, "
                     f"python {platform.python_version()}"),
        "requests_per_phase": n,
        "phases": phases,
        "frozen_fraction_of_normal": round(phases["frozen"]["requests_per_second"] / normal, 3),
        "thawed_fraction_of_normal": round(phases["thawed"]["requests_per_second"] / normal, 3),
        "worker_log": str(tmp / "worker.log"),
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(f"worker throughput with its Redis frozen ({report['platform']}), "
          f"{n} requests per burst\n")
    print(f"{'phase':<10}{'seconds':>10}{'req/s':>10}{'failed':>8}")
    for name, p in phases.items():
        print(f"{name:<10}{p['seconds']:>10}{p['requests_per_second']:>10}{p['failed']:>8}")
    print(f"\nfrozen: {report['frozen_fraction_of_normal']:.0%} of normal throughput; "
          f"thawed: {report['thawed_fraction_of_normal']:.0%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()
    asyncio.run(main(ns.requests, ns.json))
