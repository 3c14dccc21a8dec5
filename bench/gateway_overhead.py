"""Benchmark (not a test): what the HTTP gateway adds per request on a cache hit, against the
Python client straight to Kafka, and the cache-hit requests per second one gateway replica serves.

Setup: the local stack, a fresh pool with one real worker process (tiny model) and one real
`imagegen-gateway` process, started with the integration tests' helpers
(tests/integration/worker/harness.pool_of, tests/integration/gateway/test_gateway.start_gateway).
One prompt is generated once (a miss), then every measured request asks for the same prompt,
seed and size, so the worker answers it from the Redis cache:

- gateway: sync `POST /v1/images/generations` (response_format url), HTTP keep-alive (aiohttp);
- kafka: `ImagegenClient.submit([req])` then `wait([id])` (one shared client, as an app would).

Latency per request at 1 and 64 concurrent clients (p50/p99), then 64 gateway clients for
--seconds: requests per second. Everything (Kafka, Redis, worker, gateway, this load generator)
shares one small machine, so the figures are an upper bound of the overhead, not a capacity plan.

    .venv/bin/python bench/gateway_overhead.py [--requests 200] [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(ROOT))

from imagegen_api.messages import GenerationRequest  # noqa: E402
from imagegen_client import ImagegenClient  # noqa: E402
from imagegen_client.client import new_request_id  # noqa: E402

from tests.integration.conftest import start_stack  # noqa: E402
from tests.integration.gateway.test_gateway import Gateway, start_gateway, stop_gateway  # noqa: E402
from tests.integration.worker.harness import RUN, Pool, pool_of  # noqa: E402

KEY = "sk-bench-unlimited-0123456789"
PARAMS: dict[str, Any] = {"prompt": "a lighthouse at dawn", "model": "tiny", "size": "64x64",
                          "steps": 2, "seed": 11, "tier": "fast",
                          "negative_prompt": f"bench {RUN}"}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def kafka_request() -> GenerationRequest:
    return GenerationRequest(request_id=new_request_id("bench"), prompt=PARAMS["prompt"],
                             model="tiny", width=64, height=64, steps=2, seed=PARAMS["seed"],
                             tier="fast", negative_prompt=PARAMS["negative_prompt"])


async def gateway_once(session: aiohttp.ClientSession, url: str) -> float:
    t = time.perf_counter()
    async with session.post(url + "/v1/images/generations", json=PARAMS) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"gateway answered {resp.status}: {body[:300]!r}")
    return (time.perf_counter() - t) * 1000


async def kafka_once(client: ImagegenClient) -> float:
    t = time.perf_counter()
    ids = await client.submit([kafka_request()])
    got = await client.wait(ids, within=60)
    if not got or not got[ids[0]].cache_hit:
        raise RuntimeError(f"no cache hit: {got}")
    return (time.perf_counter() - t) * 1000


async def latencies(once: Any, n: int, clients: int) -> list[float]:
    out: list[float] = []
    per = max(1, n // clients)

    async def one_client() -> None:
        for _ in range(per):
            out.append(await once())

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return out


async def sustained(session: aiohttp.ClientSession, url: str, clients: int,
                    seconds: float) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def one_client() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await gateway_once(session, url)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return done / (time.perf_counter() - start)


async def ready(gw: Gateway) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            if gw.proc.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{gw.tail()}")
            try:
                async with s.get(gw.url + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"gateway not ready:\n{gw.tail()}")


async def run(n: int, seconds: float) -> dict[str, Any]:
    stack = start_stack()
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    async with pool_of(stack, tmp, "gwbench") as pool:
        pool_: Pool = pool
        await pool_.spawn()
        gw = await asyncio.to_thread(start_gateway, stack, pool_, tmp, extra_keys=(
            {"name": "bench", "key": KEY, "burst": 10**6, "ratePerSecond": 10**6},),
            # cache hits never queue: shedding on a cold throughput estimate would only add 503s
            extra_settings={"max_queue_seconds": 10**9})
        try:
            await ready(gw)
            conn = aiohttp.TCPConnector(limit=128)
            headers = {"Authorization": f"Bearer {KEY}"}
            async with aiohttp.ClientSession(connector=conn, headers=headers) as session, \
                    ImagegenClient(stack.kafka_bootstrap, pool_.config.namespace,
                                   pool_.config.pool, redis_url=stack.redis_url) as client:
                await gateway_once(session, gw.url)  # the miss that fills the cache
                for _ in range(5):  # warm both paths
                    await gateway_once(session, gw.url)
                    await kafka_once(client)
                rows: dict[str, Any] = {}
                for clients in (1, 64):
                    count = n if clients == 1 else max(n, 4 * clients)
                    g = await latencies(lambda: gateway_once(session, gw.url), count, clients)
                    k = await latencies(lambda: kafka_once(client), count, clients)
                    rows[str(clients)] = {
                        "gateway_p50_ms": pct(g, 0.5), "gateway_p99_ms": pct(g, 0.99),
                        "kafka_p50_ms": pct(k, 0.5), "kafka_p99_ms": pct(k, 0.99),
                        "samples": len(g)}
                rps = await sustained(session, gw.url, 64, seconds)
        finally:
            await asyncio.to_thread(stop_gateway, gw)
    return {"latency": rows, "gateway_rps_64_clients": rps, "seconds": seconds}


def table(res: dict[str, Any]) -> str:
    lines = [f"{'clients':>7}  {'gateway p50/p99 ms':>19}  {'kafka p50/p99 ms':>17}  "
             f"{'ratio p50':>9}  {'ratio p99':>9}"]
    for clients, r in res["latency"].items():
        lines.append(
            f"{clients:>7}  {r['gateway_p50_ms']:>8.1f} /{r['gateway_p99_ms']:>8.1f}  "
            f"{r['kafka_p50_ms']:>7.1f} /{r['kafka_p99_ms']:>7.1f}  "
            f"{r['gateway_p50_ms'] / r['kafka_p50_ms']:>9.2f}  "
            f"{r['gateway_p99_ms'] / r['kafka_p99_ms']:>9.2f}")
    lines.append(f"one gateway replica, 64 clients, {res['seconds']:.0f} s of cache hits: "
                 f"{res['gateway_rps_64_clients']:.0f} requests/s")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200, help="samples per path and concurrency")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--json", action="store_true")
    ns = p.parse_args()
    res = asyncio.run(run(ns.requests, ns.seconds))
    print(json.dumps(res, indent=2) if ns.json else table(res))


if __name__ == "__main__":
    main()
