"""Webhooks and load shedding of the gateway on the real local stack (Kafka, Redis, MinIO, a real
CPU worker): a webhook delivered to a local receiver (aiohttp on 127.0.0.1, allowed by the
pool's allow-list) with a valid signature after the receiver failed twice, every attempt in the
job record; SSRF targets refused at submit with a 400 naming `webhook` and nothing produced;
503 + Retry-After under an injected backlog (messages in the tier topic, a heartbeat that
reports 1 image/s), counted in the rejected metric.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiokafka import AIOKafkaProducer
from imagegen_api import naming
from imagegen_api.messages import GenerationRequest, Heartbeat
from imagegen_gateway import webhooks

from tests.integration.gateway.test_gateway import (
    KEYS,
    Gateway,
    produced,
    start_gateway,
    stop_gateway,
    wait_ready,
)
from tests.integration.worker.harness import RUN, Pool, free_port, pool_of

pytestmark = pytest.mark.integration

HOOK_KEY = "sk-test-webhooks-0123456789"
HOOK_SECRET = "whsec-test-0123456789abcdef"
HOOK_KEYS = ({"name": "hooks", "key": HOOK_KEY, "burst": 1000, "ratePerSecond": 100,
              "webhookSecret": HOOK_SECRET},)


@dataclass
class Receiver:
    """An HTTP receiver on 127.0.0.1 answering 500 to its first `fail` calls, then 200."""

    fail: int
    calls: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 500 if len(self.calls) < self.fail else 200
        self.calls.append((dict(request.headers), body, status))
        return web.Response(status=status, text="ok" if status == 200 else "try later")


@pytest.fixture(scope="module")
async def hooked(stack: Any, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[tuple[Pool, Gateway]]:
    tmp = tmp_path_factory.mktemp("gwhooks")
    async with pool_of(stack, tmp, "gwh") as pool:
        await pool.spawn()
        gw = await asyncio.to_thread(
            start_gateway, stack, pool, tmp, extra_keys=HOOK_KEYS,
            extra_settings={"webhook_allowed_hosts": ["127.0.0.1/32"],
                            "webhook_max_attempts": 4, "webhook_backoff_seconds": 0.5})
        try:
            await wait_ready(gw)
            yield pool, gw
        finally:
            await asyncio.to_thread(stop_gateway, gw)


async def test_webhook_signed_and_retried_after_two_failures(
        hooked: tuple[Pool, Gateway]) -> None:
    _, gw = hooked
    receiver = Receiver(fail=2)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        body = json.dumps({"prompt": "a lighthouse", "size": "64x64", "steps": 2,
                           "negative_prompt": f"run {RUN}",
                           "webhook": f"http://127.0.0.1:{port}/hook"}).encode()
        status, _, ans = await asyncio.to_thread(gw.call, "POST", "/v1/generations",
                                                 body, key=HOOK_KEY)
        assert status == 202, ans
        rid = ans["id"]
        assert set(ans["queue"]) >= {"position", "estimated_wait_seconds"}
        deadline = time.monotonic() + 180
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            _, _, view = await asyncio.to_thread(gw.call, "GET", f"/v1/generations/{rid}",
                                                 key=HOOK_KEY)
            if view.get("webhook", {}).get("state") in ("delivered", "failed"):
                break
            await asyncio.sleep(0.3)
        assert view["state"] == "succeeded", view
        hook = view["webhook"]
        assert hook["state"] == "delivered", (hook, gw.tail())
        assert [a.get("status") for a in hook["attempts"]] == [500, 500, 200]
        assert [a["outcome"] for a in hook["attempts"]] == ["http_error", "http_error",
                                                            "delivered"]
        # Backoff: 0.5 s then 1 s between the attempts (recorded times), not immediate.
        at = [a["at"] for a in hook["attempts"]]
        assert at[1] - at[0] >= 0.45 and at[2] - at[1] >= 0.95, at
        assert [c[2] for c in receiver.calls] == [500, 500, 200]
        hdrs, raw, _ = receiver.calls[-1]
        assert webhooks.verify(HOOK_SECRET, hdrs[webhooks.TIMESTAMP_HEADER],
                               hdrs[webhooks.SIGNATURE_HEADER], raw, now=time.time())
        assert not webhooks.verify("whsec-some-other-secret", hdrs[webhooks.TIMESTAMP_HEADER],
                                   hdrs[webhooks.SIGNATURE_HEADER], raw, now=time.time())
        sent = json.loads(raw)
        assert sent["id"] == rid and sent["state"] == "succeeded" and len(sent["images"]) == 1
        assert hdrs[webhooks.ID_HEADER] == rid
        await asyncio.sleep(2)  # no further call once delivered (one replica, one claim)
        assert len(receiver.calls) == 3
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("url", "words"), [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.1.2.3:8080/hook", "private"),
    ("http://[::1]:9/hook", "loopback"),
    # 127.0.0.1/32 is allowed here (the receiver): the rest of 127/8 is not. Names: unit tests.
    ("http://127.0.0.2:9/hook", "loopback"),
    ("http://0.0.0.0:9/", "unspecified"),
    ("ftp://127.0.0.1/hook", "http or https only"),
    ("file:///etc/passwd", "http or https only"),
    ("http://no-such-host.invalid/hook", "does not resolve"),
])
async def test_ssrf_targets_refused_at_submit(hooked: tuple[Pool, Gateway], url: str,
                                              words: str) -> None:
    pool, gw = hooked
    before = await produced(pool)
    body = json.dumps({"prompt": "x", "webhook": url}).encode()
    for path in ("/v1/generations", "/v1/images/generations"):
        status, _, ans = await asyncio.to_thread(gw.call, "POST", path, body, key=HOOK_KEY)
        assert status == 400, ans
        assert ans["error"]["param"] == "webhook" and ans["error"]["code"] == "webhook_refused"
        assert words in ans["error"]["message"], ans
    assert await produced(pool) == before


async def test_webhook_needs_a_key_with_a_secret(hooked: tuple[Pool, Gateway]) -> None:
    pool, gw = hooked
    before = await produced(pool)
    body = json.dumps({"prompt": "x", "webhook": "http://127.0.0.1:9/hook"}).encode()
    status, _, ans = await asyncio.to_thread(gw.call, "POST", "/v1/generations", body,
                                             key=KEYS["all"])
    assert status == 400 and ans["error"]["code"] == "webhook_not_configured", ans
    assert ans["error"]["param"] == "webhook"
    assert await produced(pool) == before


@pytest.fixture(scope="module")
async def idle(stack: Any, tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[tuple[Pool, Gateway]]:
    """A pool with no worker consuming: whatever is produced stays in the backlog."""
    tmp = tmp_path_factory.mktemp("gwshed")
    async with pool_of(stack, tmp, "gws") as pool:
        gw = await asyncio.to_thread(
            start_gateway, stack, pool, tmp,
            extra_settings={"max_queue_seconds": 10, "backlog_refresh_seconds": 0.5})
        try:
            await wait_ready(gw)
            yield pool, gw
        finally:
            await asyncio.to_thread(stop_gateway, gw)


async def inject_backlog(pool: Pool, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=pool.stack.kafka_bootstrap)
    await producer.start()
    try:
        topic = pool.config.kafka.tier_topics["fast"]
        for i in range(n):
            req = GenerationRequest(request_id=f"backlog-{RUN}-{i}", prompt="x", tier="fast")
            await producer.send(topic, req.to_bytes(), key=req.request_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def beat(pool: Pool, images_per_second: float) -> None:
    now = time.time()
    hb = Heartbeat(worker=f"{pool.name}-fake", role="warm", state="ready", ready=True,
                   images_per_second=images_per_second, interval_seconds=60, updated_at=now,
                   started_at=now)
    r = aioredis.from_url(pool.stack.redis_url)
    try:
        await r.hset(naming.workers_key(pool.config.namespace, pool.name), hb.worker,
                     hb.to_bytes())
    finally:
        await r.aclose()


async def wait_status(gw: Gateway, body: bytes, want: int) -> tuple[dict[str, str], Any]:
    deadline = time.monotonic() + 20
    while True:
        status, headers, ans = await asyncio.to_thread(gw.call, "POST", "/v1/generations",
                                                       body)
        if status == want:
            return headers, ans
        if time.monotonic() > deadline:
            pytest.fail(f"still {status} {ans}, wanted {want}:\n{gw.tail()}")
        await asyncio.sleep(0.5)


async def test_shedding_503_with_retry_after_under_backlog(idle: tuple[Pool, Gateway]) -> None:
    pool, gw = idle
    body = json.dumps({"prompt": "x", "negative_prompt": f"run {RUN}"}).encode()
    # 5 queued at 1 image/s: 5 s < 10 s, admitted, and the 202 says where it stands.
    await inject_backlog(pool, 4)
    await beat(pool, 1.0)
    await asyncio.sleep(2)  # a few backlog refreshes (every 0.5 s) see both
    _, ans = await wait_status(gw, body, 202)
    assert ans["queue"]["position"] >= 5, ans
    assert 4 <= ans["queue"]["estimated_wait_seconds"] <= 10, ans
    assert ans["queue"]["throughput_per_second"] == 1.0
    # 30 queued at 1 image/s: 30 s > 10 s, refused at the door.
    before = await produced(pool)
    await inject_backlog(pool, 25)
    await beat(pool, 1.0)
    await asyncio.sleep(2)
    headers, ans = await wait_status(gw, body, 503)
    assert ans["error"]["code"] == "overloaded" and "maxQueueSeconds" in ans["error"]["message"]
    retry = int({k.lower(): v for k, v in headers.items()}["retry-after"])
    assert 15 <= retry <= 25, retry  # the excess over the bound: ~30 - 10
    assert await produced(pool) == before + 25  # the refused request was not produced
    _, _, text = await asyncio.to_thread(_metrics, gw)
    assert 'imagegen_gateway_rejected_total{reason="overloaded"}' in text
    # The pool reports more throughput (10 images/s: 3 s of wait) and it admits again.
    await beat(pool, 10.0)
    await wait_status(gw, body, 202)


def _metrics(gw: Gateway) -> tuple[int, dict[str, str], str]:
    with urllib.request.urlopen(gw.url + "/metrics", timeout=10) as r:
        return r.status, dict(r.headers), r.read().decode()
