"""The gateway on the real local stack: a `imagegen-gateway` process (uvicorn) in front of a
pool of its own served by a real worker process (builtin://tiny-sdxl on the CPU, see
tests/integration/worker/harness.py), driven with the official `openai` package and plain HTTP.

Asserts: sync generation with n=2 in both response formats (PNGs decode), async 202 → poll →
succeeded with images, /v1/models, 401/403/429, and refusals (bad size, unknown model, wrong
content type, oversized body) answered in OpenAI's error shape with nothing produced to Kafka.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from imagegen_api import naming
from PIL import Image

from tests.integration.worker.harness import PARTITIONS, RUN, Pool, free_port, pool_of

pytestmark = pytest.mark.integration

KEYS = {
    "all": "sk-test-all-tiers-0123456789",
    "relax": "sk-test-relax-only-0123456789",
    "slow": "sk-test-slow-bucket-0123456789",
}


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def call(self, method: str, path: str, body: bytes | None = None, *,
             key: str | None = KEYS["all"],
             ctype: str = "application/json") -> tuple[int, dict[str, str], Any]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if key is not None:
            req.add_header("Authorization", f"Bearer {key}")
        if body is not None:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, dict(exc.headers), json.loads(raw) if raw else None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def client(self, key: str = KEYS["all"]) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0,
                             timeout=180)


@pytest.fixture(scope="module")
async def served(stack: Any, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[tuple[Pool, Gateway]]:
    tmp = tmp_path_factory.mktemp("gateway")
    async with pool_of(stack, tmp, "gw") as pool:
        await pool.spawn()
        gw = await asyncio.to_thread(start_gateway, stack, pool, tmp)
        try:
            await wait_ready(gw)
            yield pool, gw
        finally:
            await asyncio.to_thread(stop_gateway, gw)


async def wait_ready(gw: Gateway) -> None:
    """Until /readyz answers 200; fails with the gateway's log if it exits or takes 60 s."""
    deadline = time.monotonic() + 60
    while True:
        if gw.proc.poll() is not None:
            pytest.fail(f"gateway exited {gw.proc.returncode}:\n{gw.tail()}")
        try:
            status, _, _ = await asyncio.to_thread(gw.call, "GET", "/readyz")
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gateway not ready:\n{gw.tail()}")
        await asyncio.sleep(0.3)


def start_gateway(stack: Any, pool: Pool, tmp: Path, *,
                  extra_keys: tuple[dict[str, Any], ...] = (),
                  extra_settings: dict[str, Any] | None = None) -> Gateway:
    """`imagegen-gateway` for `pool`, with three keys and a 4 KiB body limit."""
    keys_file = tmp / "keys.json"
    keys_file.write_text(json.dumps({"keys": [
        {"name": "all", "key": KEYS["all"], "burst": 1000, "ratePerSecond": 100},
        {"name": "relax", "key": KEYS["relax"], "tiers": ["relax"]},
        {"name": "slow", "key": KEYS["slow"], "burst": 2, "ratePerSecond": 0.01},
        *extra_keys,
    ]}))
    settings = tmp / "gateway.json"
    settings.write_text(json.dumps({"sync_timeout_seconds": 150,
                                    "max_body_bytes": 4096, **(extra_settings or {})}))
    port = free_port()
    log = tmp / "gateway.log"
    env = {**os.environ,
           naming.ENV_WORKER_CONFIG: str(pool.config_path),
           naming.ENV_GATEWAY_KEYS: str(keys_file),
           naming.ENV_GATEWAY_CONFIG: str(settings),
           naming.ENV_HTTP_PORT: str(port),
           naming.ENV_KAFKA_BOOTSTRAP: stack.kafka_bootstrap,
           naming.ENV_REDIS_URL: stack.redis_url}
    exe = Path(sys.executable).with_name("imagegen-gateway")
    proc = subprocess.Popen([str(exe)], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    gw = Gateway(f"http://127.0.0.1:{port}", proc, log)
    return gw


def stop_gateway(gw: Gateway) -> None:
    gw.proc.terminate()
    try:
        gw.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        gw.proc.kill()
        gw.proc.wait()


async def produced(pool: Pool) -> int:
    """Messages ever produced to the pool's tier topics (Σ end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=pool.stack.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in pool.config.kafka.tier_topics.values()
               for p in range(PARTITIONS)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.format == "PNG"
        return img.size


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return bytes(r.read())


# --- generation through the openai package ---------------------------------------------------


@pytest.mark.parametrize("fmt", ["url", "b64_json"])
async def test_openai_sync_generation_n2(served: tuple[Pool, Gateway], fmt: str) -> None:
    _, gw = served
    client = gw.client()
    resp = await asyncio.to_thread(
        client.images.generate, model="tiny", prompt=f"a red square {fmt}", n=2, size="64x64",
        response_format=fmt,  # type: ignore[arg-type]
        extra_body={"steps": 2, "seed": 7, "tier": "fast", "negative_prompt": f"run {RUN}"})
    assert resp.data is not None and len(resp.data) == 2
    blobs = []
    for item in resp.data:
        if fmt == "url":
            assert item.url and item.b64_json is None
            blobs.append(await asyncio.to_thread(fetch, item.url))
        else:
            assert item.b64_json and item.url is None
            blobs.append(base64.b64decode(item.b64_json))
    assert [png_size(b) for b in blobs] == [(64, 64), (64, 64)]
    assert blobs[0] != blobs[1]  # two images, two seeds


async def test_async_generation_202_then_poll(served: tuple[Pool, Gateway]) -> None:
    _, gw = served
    body = json.dumps({"prompt": "a blue circle", "model": "tiny", "size": "64x64", "n": 1,
                       "tier": "relax", "negative_prompt": f"run {RUN}"}).encode()
    status, headers, data = await asyncio.to_thread(gw.call, "POST", "/v1/generations", body)
    assert status == 202, data
    assert data["state"] == "queued" and data["tier"] == "relax"
    assert headers["location"] == f"/v1/generations/{data['id']}"
    deadline = time.monotonic() + 150
    states = []
    while time.monotonic() < deadline:
        status, _, job = await asyncio.to_thread(gw.call, "GET", headers["location"])
        assert status == 200, job
        states.append(job["state"])
        if job["state"] in {"succeeded", "failed", "rejected", "blocked", "expired"}:
            break
        await asyncio.sleep(0.3)
    assert job["state"] == "succeeded", job
    assert job["timings"]["total_ms"] > 0
    assert len(job["images"]) == 1
    assert png_size(await asyncio.to_thread(fetch, job["images"][0]["url"])) == (64, 64)
    status, _, missing = await asyncio.to_thread(gw.call, "GET", "/v1/generations/nope-123")
    assert status == 404 and missing["error"]["param"] == "id"


async def test_a_job_answers_only_the_key_that_submitted_it(served: tuple[Pool, Gateway]
                                                           ) -> None:
    """Another key gets the 404 of an unknown id (not 403: ids cannot be probed), before and
    after the worker wrote the record; the submitting key reads it throughout."""
    _, gw = served
    body = json.dumps({"prompt": "a red square", "model": "tiny", "size": "64x64",
                       "tier": "relax", "negative_prompt": f"owner {RUN}"}).encode()
    status, _, data = await asyncio.to_thread(gw.call, "POST", "/v1/generations", body,
                                              key=KEYS["relax"])
    assert status == 202, data
    rid = data["id"]

    def read(key: str) -> tuple[int, Any]:
        code, _, view = gw.call("GET", f"/v1/generations/{rid}", key=key)
        return code, view

    code, theirs = await asyncio.to_thread(read, KEYS["all"])
    assert code == 404, theirs
    assert theirs["error"] == {**theirs["error"], "code": "not_found", "param": "id"}
    _, _, unknown = await asyncio.to_thread(gw.call, "GET", "/v1/generations/gw-unknown0000")
    assert theirs["error"]["message"].replace(rid, "X") == \
        unknown["error"]["message"].replace("gw-unknown0000", "X")
    deadline = time.monotonic() + 150
    mine: Any = None
    while time.monotonic() < deadline:
        code, mine = await asyncio.to_thread(read, KEYS["relax"])
        assert code == 200, mine
        if mine["state"] == "succeeded":
            break
        await asyncio.sleep(0.3)
    assert mine["state"] == "succeeded" and len(mine["images"]) == 1, mine
    code, theirs = await asyncio.to_thread(read, KEYS["all"])
    assert code == 404 and theirs["error"]["code"] == "not_found", theirs


async def test_a_request_id_of_another_key_is_refused(served: tuple[Pool, Gateway]) -> None:
    """A client-chosen request_id is its first key's: another key reusing it would be answered
    from that job's record by the worker, so it is refused (409) with nothing produced; the
    first key may send it again (an idempotent retry)."""
    pool, gw = served
    body = json.dumps({"prompt": "a green triangle", "model": "tiny", "size": "64x64",
                       "tier": "relax", "request_id": f"mine-{RUN}"}).encode()
    status, _, data = await asyncio.to_thread(gw.call, "POST", "/v1/generations", body,
                                              key=KEYS["relax"])
    assert status == 202 and data["id"] == f"mine-{RUN}", data
    before = await produced(pool)
    status, _, refused = await asyncio.to_thread(gw.call, "POST", "/v1/generations", body,
                                                 key=KEYS["all"])
    assert status == 409, refused
    assert refused["error"]["param"] == "request_id"
    assert refused["error"]["code"] == "request_id_in_use"
    assert await produced(pool) == before
    status, _, again = await asyncio.to_thread(gw.call, "POST", "/v1/generations", body,
                                               key=KEYS["relax"])
    assert status == 202, again
    status, _, view = await asyncio.to_thread(gw.call, "GET", f"/v1/generations/mine-{RUN}",
                                              key=KEYS["relax"])
    assert status == 200, view


async def test_models_lists_the_pool_models(served: tuple[Pool, Gateway]) -> None:
    _, gw = served
    models = await asyncio.to_thread(lambda: gw.client().models.list().data)
    assert [m.id for m in models] == ["tiny"]


# --- refusals: nothing produced --------------------------------------------------------------


async def test_auth_and_tier_refusals(served: tuple[Pool, Gateway]) -> None:
    pool, gw = served
    before = await produced(pool)
    with pytest.raises(openai.AuthenticationError) as unknown:
        await asyncio.to_thread(gw.client("sk-not-a-key-000000000").images.generate,
                                prompt="x", size="64x64")
    assert unknown.value.status_code == 401
    status, _, data = await asyncio.to_thread(gw.call, "POST", "/v1/images/generations",
                                              b'{"prompt": "x"}', key=None)
    assert status == 401 and data["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await asyncio.to_thread(gw.client(KEYS["relax"]).images.generate, prompt="x",
                                size="64x64", extra_body={"tier": "fast"})
    assert denied.value.status_code == 403
    assert denied.value.body["param"] == "tier"  # type: ignore[index]
    assert await produced(pool) == before


async def test_rate_limit_429_with_retry_after(served: tuple[Pool, Gateway]) -> None:
    pool, gw = served
    body = json.dumps({"prompt": "rate limited", "size": "64x64", "tier": "relax",
                       "negative_prompt": f"run {RUN}"}).encode()
    answers = [await asyncio.to_thread(gw.call, "POST", "/v1/generations", body,
                                       key=KEYS["slow"]) for _ in range(3)]
    assert [a[0] for a in answers] == [202, 202, 429], answers
    status, headers, data = answers[2]
    assert int(headers["retry-after"]) >= 1
    assert data["error"]["type"] == "rate_limit_error"
    before = await produced(pool)
    status, _, _ = await asyncio.to_thread(gw.call, "POST", "/v1/generations", body,
                                           key=KEYS["slow"])
    assert status == 429
    assert await produced(pool) == before


@pytest.mark.parametrize(("body", "ctype", "status", "param"), [
    (b'{"prompt": "x", "size": "512x512"}', "application/json", 400, "size"),
    (b'{"prompt": "x", "size": "65x64"}', "application/json", 400, "size"),
    (b'{"prompt": "x", "size": "big"}', "application/json", 400, "size"),
    (b'{"prompt": "x", "n": 3}', "application/json", 400, "n"),
    (b'{"prompt": "x", "steps": 9}', "application/json", 400, "steps"),
    (b'{"prompt": "x", "model": "sdxl-huge"}', "application/json", 404, "model"),
    (b'{"size": "64x64"}', "application/json", 400, "prompt"),
    (b'{"prompt": "x"', "application/json", 400, None),
    (b'{"prompt": "x"}', "text/plain", 415, None),
    (b'{"prompt": "' + b"x" * 5000 + b'"}', "application/json", 413, None),
])
async def test_bad_input_refused_in_openai_shape(served: tuple[Pool, Gateway], body: bytes,
                                                 ctype: str, status: int,
                                                 param: str | None) -> None:
    pool, gw = served
    before = await produced(pool)
    got, _, data = await asyncio.to_thread(gw.call, "POST", "/v1/images/generations", body,
                                           ctype=ctype)
    assert got == status, data
    assert set(data["error"]) == {"message", "type", "param", "code"}
    assert data["error"]["param"] == param
    assert await produced(pool) == before


async def test_bad_size_through_openai_names_the_limit(served: tuple[Pool, Gateway]) -> None:
    pool, gw = served
    before = await produced(pool)
    with pytest.raises(openai.BadRequestError) as bad:
        await asyncio.to_thread(gw.client().images.generate, prompt="x", size="1024x1024")
    assert bad.value.status_code == 400
    assert "maxPixels" in bad.value.message
    assert await produced(pool) == before


async def test_metrics_count_requests_and_rejections(served: tuple[Pool, Gateway]) -> None:
    _, gw = served
    await asyncio.to_thread(gw.call, "POST", "/v1/images/generations", b'{"prompt": "x"}',
                            ctype="text/plain")
    text = await asyncio.to_thread(lambda: fetch(gw.url + "/metrics").decode())
    assert 'imagegen_gateway_rejected_total{reason="unsupported_media_type"}' in text
    assert 'route="/v1/images/generations",status="415"' in text
    assert "imagegen_gateway_request_seconds_bucket" in text


async def test_gateway_log_has_no_traceback(served: tuple[Pool, Gateway]) -> None:
    _, gw = served
    assert "Traceback" not in gw.log.read_text(), gw.log.read_text()[-3000:]
