"""Tenants sharing the stack (issue 17, isolation): the same request id sent to two pools that
share Redis gets two independent answers, each under its own pool's prefix; `POST /drain` from
another pod (a caller that is not on the worker's loopback) cannot idle a worker."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.worker.harness import NAMESPACE, pool_of, request


async def test_same_id_in_two_pools_sharing_redis(stack: Any, chaos_tmp: Path) -> None:
    async with pool_of(stack, chaos_tmp, "tenant-a") as a, \
            pool_of(stack, chaos_tmp, "tenant-b") as b:
        await asyncio.gather(a.spawn(), b.spawn())
        mine = request("tenant A's secret drawing", seed=11, num_images=1)
        theirs = mine.model_copy(update={"prompt": "tenant B's own drawing", "seed": 12})
        async with a.client() as ca:
            ra = (await ca.generate([mine], within=90))[mine.request_id]
        async with b.client() as cb:
            rb = (await cb.generate([theirs], within=90))[theirs.request_id]
    assert ra.status == rb.status == "succeeded", (ra, rb)
    assert not rb.cache_hit, rb  # not A's record replayed to B
    assert all(i.key.startswith(f"{NAMESPACE}/{b.name}/") for i in rb.images), rb
    assert {i.sha256 for i in rb.images}.isdisjoint({i.sha256 for i in ra.images}), (ra, rb)
    assert rb.images[0].seed == 12, rb


def outside_address() -> str:
    """This machine's address as another pod would reach it (not loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent; picks the outgoing interface
        addr = str(s.getsockname()[0])
    assert not addr.startswith("127."), f"no non-loopback address to call from ({addr})"
    return addr


def post_from_outside(port: int) -> int | str:
    req = urllib.request.Request(f"http://{outside_address()}:{port}/drain", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError as exc:  # not listening there at all: as good as refused
        return f"unreachable: {exc}"


async def test_drain_from_another_pod_is_refused(stack: Any, chaos_tmp: Path) -> None:
    async with pool_of(stack, chaos_tmp, "drainx") as pool:
        worker = await pool.spawn()
        answer = await asyncio.to_thread(post_from_outside, worker.port)
        await asyncio.sleep(1.0)
        ready = (await asyncio.to_thread(worker.get, "/readyz"))[0]
        assert not (isinstance(answer, int) and 200 <= answer < 300), answer
        assert ready == 200 and worker.proc.poll() is None, worker.tail()
