"""A webhook whose gateway dies mid-delivery is delivered by another replica: gateway A claims
the delivery (a lease in Redis) and is SIGKILLed while its first attempt is in flight; gateway B,
started afterwards in the same webhook consumer group, reads the result A never committed, waits
A's lease out and delivers it once, signed, with the attempts recorded in the job record.

Real parts only: Kafka, Redis, a CPU worker and two `imagegen-gateway` processes; the receiver is
aiohttp on 127.0.0.1 (allowed by the pool's allow-list).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from imagegen_gateway import webhooks

from tests.integration.gateway.test_gateway import start_gateway, stop_gateway, wait_ready
from tests.integration.gateway.test_webhooks_shedding import HOOK_KEY, HOOK_KEYS, HOOK_SECRET
from tests.integration.worker.harness import RUN, free_port, pool_of

pytestmark = pytest.mark.integration

# Short timeouts keep the lease (every attempt's timeout and pause, plus 30 s) near 34 s.
SETTINGS = {"webhook_allowed_hosts": ["127.0.0.1/32"], "webhook_max_attempts": 3,
            "webhook_backoff_seconds": 0.5, "webhook_timeout_seconds": 1.0}


async def test_a_delivery_whose_gateway_died_is_taken_over(stack: Any, tmp_path: Path) -> None:
    calls: list[tuple[float, dict[str, str], bytes]] = []
    gateways: dict[str, Any] = {}
    first_call = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        calls.append((time.time(), dict(request.headers), body))
        if len(calls) == 1:  # A's first attempt: A dies before it learns the outcome
            gateways["a"].proc.kill()
            first_call.set()
            return web.Response(status=500, text="gateway A is gone")
        return web.Response(status=200, text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with pool_of(stack, tmp_path, "gwtake") as pool:
            await pool.spawn()
            (tmp_path / "a").mkdir()
            (tmp_path / "b").mkdir()
            gw_a = await asyncio.to_thread(start_gateway, stack, pool, tmp_path / "a",
                                           extra_keys=HOOK_KEYS, extra_settings=SETTINGS)
            gateways["a"] = gw_a
            gw_b = None
            try:
                await wait_ready(gw_a)
                body = json.dumps({"prompt": "a lighthouse", "size": "64x64", "steps": 2,
                                   "negative_prompt": f"takeover {RUN}",
                                   "webhook": f"http://127.0.0.1:{port}/hook"}).encode()
                status, _, ans = await asyncio.to_thread(gw_a.call, "POST", "/v1/generations",
                                                         body, key=HOOK_KEY)
                assert status == 202, ans
                rid = ans["id"]
                try:
                    await asyncio.wait_for(first_call.wait(), 180)
                except TimeoutError:
                    pytest.fail(f"gateway A never called the webhook:\n{gw_a.tail()}")
                await asyncio.to_thread(gw_a.proc.wait, 30)
                assert gw_a.proc.returncode == -9

                gw_b = await asyncio.to_thread(start_gateway, stack, pool, tmp_path / "b",
                                               extra_keys=HOOK_KEYS, extra_settings=SETTINGS)
                await wait_ready(gw_b)
                view: dict[str, Any] = {}
                deadline = time.monotonic() + 150
                while time.monotonic() < deadline:
                    _, _, view = await asyncio.to_thread(gw_b.call, "GET",
                                                         f"/v1/generations/{rid}", key=HOOK_KEY)
                    if view.get("webhook", {}).get("state") in ("delivered", "failed"):
                        break
                    await asyncio.sleep(0.5)
                hook = view.get("webhook", {})
                assert view["state"] == "succeeded", view
                assert hook.get("state") == "delivered", (hook, gw_b.tail())
                await asyncio.sleep(2)  # and nobody delivers it again
            finally:
                for gw in (gw_a, gw_b):
                    if gw is not None and gw.proc.poll() is None:
                        await asyncio.to_thread(stop_gateway, gw)
    finally:
        await runner.cleanup()

    assert len(calls) == 2, [c[0] for c in calls]
    # B waited A's lease out (~34 s here) before taking over: no double delivery meanwhile.
    assert calls[1][0] - calls[0][0] >= 25, calls[1][0] - calls[0][0]
    # A died before recording its attempt: B's attempt is the first on record, delivered.
    assert [a["outcome"] for a in hook["attempts"]] == ["delivered"], hook
    _, headers, raw = calls[1]
    assert webhooks.verify(HOOK_SECRET, headers[webhooks.TIMESTAMP_HEADER],
                           headers[webhooks.SIGNATURE_HEADER], raw, now=time.time())
    sent = json.loads(raw)
    assert sent["id"] == rid and sent["state"] == "succeeded"
