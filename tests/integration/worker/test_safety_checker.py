"""Safety after generation (spec.safety.checker) through Kafka on the local stack.

Nothing is faked: one `imagegen-worker run` process serves the trained builtin://shapes-sdxl for a
pool of its own whose checker is builtin://redness (the image's mean redness, threshold 0.3).
The prompt decides the pixels, the pixels decide the verdict: "a white circle on a red
background" paints 65-90% of the picture in the palette's red (redness 0.745), scoring ~0.5-0.67;
the same circle on a green background scores 0. The shapes model gets the background right in
every picture of its benchmark (its misses are shape colours, docs/benchmarks.md), so both
outcomes are certain, while a checker that ignored the pixels could not tell them apart.

Asserted: the red picture is answered `blocked` (code blocked, field images, reason redness, a
score above the threshold), no image of it is in MinIO and none is cached (the same seeded
request again is generated and blocked again, while the green one repeated is a cache hit); the
green picture is delivered as usual and its stored pixels score below the threshold; the
worker's counter and heartbeat report the blocked images; the offsets are committed.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from imagegen_api import naming
from imagegen_api.messages import GenerationRequest, Heartbeat
from imagegen_api.specs import (
    GenerationDefaults,
    ImageModelSpec,
    ModelLimits,
    SafetyCheckerSpec,
    SafetySpec,
)
from imagegen_api.workerconfig import ModelEntry
from imagegen_client import new_request_id
from imagegen_worker.pipelines import safety_models, shapes_train
from PIL import Image

from tests.integration.worker.harness import NAMESPACE, RUN, Pool, Worker, make_pool
from tests.integration.worker.test_generation_features import s3_client

pytestmark = pytest.mark.integration

THRESHOLD = 0.3
WITHIN = 300.0
# A model name unique to this run: cache keys name the model, so nothing comes from an earlier run.
MODEL = f"shapes-safety-{uuid.uuid4().hex[:8]}"
SPEC = ImageModelSpec(
    source="builtin://shapes-sdxl", pipeline="sdxl", dtype="float32",
    defaults=GenerationDefaults(width=64, height=64, steps=20, guidance=5.0, sampler="euler"),
    limits=ModelLimits(max_pixels=64 * 64, max_steps=20, max_prompt_tokens=20,
                       max_images_per_request=2),
)


@pytest.fixture(scope="module")
async def checked_pool(stack: Any, package_tmp: Path) -> AsyncIterator[tuple[Pool, Worker]]:
    await asyncio.to_thread(shapes_train.ensure)
    pool = await make_pool(stack, package_tmp, "safety")
    pool.config = pool.config.model_copy(update={
        "models": [ModelEntry(name=MODEL, spec=SPEC)],
        "safety": SafetySpec(blocklist=["forbidden phrase"], checker=SafetyCheckerSpec(
            source="builtin://redness", threshold=THRESHOLD)),
    })
    await asyncio.to_thread(pool.config_path.write_text, pool.config.dump_json())
    try:
        worker = await pool.spawn()
        yield pool, worker
    finally:
        await asyncio.to_thread(pool.stop_all)


def req(prompt: str, seed: int, **kw: Any) -> GenerationRequest:
    return GenerationRequest(request_id=new_request_id("safety"), model=MODEL, tier="fast",
                             seed=seed, prompt=prompt, **kw)


async def test_a_flagged_picture_is_blocked_and_never_stored(
        checked_pool: tuple[Pool, Worker], stack: Any) -> None:
    pool, worker = checked_pool
    s3 = s3_client(stack)
    bucket = pool.config.storage.bucket
    prefix = naming.object_prefix(NAMESPACE, pool.name)
    red = req("a white circle on a red background", seed=5)
    green = req("a white circle on a green background", seed=5)
    # Two images, one request: a flagged image blocks the request, neither image is stored.
    pair = req("a white square on a red background", seed=9, num_images=2)

    async with pool.client() as client:
        results = await client.generate([red, green, pair], within=WITHIN)
        assert set(results) == {red.request_id, green.request_id, pair.request_id}, worker.tail()

        blocked = results[red.request_id]
        assert blocked.status == "blocked", blocked
        assert blocked.error is not None
        assert (blocked.error.code, blocked.error.field, blocked.error.reason) == (
            "blocked", "images", "redness")
        assert blocked.error.limit == f"safety.checker.threshold={THRESHOLD:g}"
        assert blocked.error.score is not None and THRESHOLD < blocked.error.score <= 1.0
        assert "seed 5" in blocked.error.message and "builtin://redness" in blocked.error.message
        assert blocked.images == [] and not blocked.cache_hit
        assert blocked.model_revision and blocked.timings.generate_ms > 0
        record = await client.status(red.request_id)
        assert record is not None and record.state == "blocked"

        both = results[pair.request_id]
        assert both.status == "blocked" and both.images == [], both
        assert both.error is not None and both.error.message.startswith("image ")
        # At least the worst image flagged (the model may paint the other one less red).
        found = re.search(r"\((\d) of 2 flagged\)", both.error.message)
        assert found is not None and int(found.group(1)) in (1, 2), both.error.message
        pair_flagged = int(found.group(1))

        ok = results[green.request_id]
        assert ok.status == "succeeded", ok
        [ref] = ok.images
        data = (await asyncio.to_thread(s3.get_object, Bucket=bucket, Key=ref.key))["Body"].read()
        with Image.open(io.BytesIO(data)) as img:
            [verdict] = safety_models.BuiltinChecker("cpu").score([img.convert("RGB")])
        assert verdict.score < THRESHOLD  # the pixels delivered are the ones that passed

        # Nothing of the blocked requests was stored: the pool's prefix holds the one image.
        listed = await asyncio.to_thread(s3.list_objects_v2, Bucket=bucket, Prefix=prefix)
        keys = [o["Key"] for o in listed.get("Contents", [])
                if o["Key"].endswith((".png", ".webp", ".jpeg"))]
        assert keys == [ref.key], keys

        # Nothing cached: the blocked request again is generated again (and blocked again);
        # the delivered one again is a cache hit, so this pool's cache works.
        again_red = red.model_copy(update={"request_id": new_request_id("safety")})
        again_green = green.model_copy(update={"request_id": new_request_id("safety")})
        again = await client.generate([again_red, again_green], within=WITHIN)
    r2, g2 = again[again_red.request_id], again[again_green.request_id]
    assert r2.status == "blocked" and not r2.cache_hit and r2.timings.generate_ms > 0, r2
    # The same seed paints the same picture (up to float noise of another batch composition).
    assert r2.error is not None and r2.error.score == pytest.approx(blocked.error.score, abs=1e-3)
    assert g2.status == "succeeded" and g2.cache_hit, g2

    # 1 (red) + the pair's flagged images + 1 (red again): counted per image.
    blocked_images = 2 + pair_flagged
    assert worker.metric("imagegen_safety_blocked_images_total") == blocked_images
    assert worker.metric("imagegen_requests_total", status="blocked") == 3
    assert worker.metric("imagegen_safety_check_seconds_count") >= 2
    assert await pool.wait_lag_zero() == 0
    beat = await _heartbeat(stack, pool, worker)
    assert beat.blocked_images == blocked_images


async def test_the_prompt_blocklist_still_answers_first(
        checked_pool: tuple[Pool, Worker]) -> None:
    """A blocked prompt never reaches the pipeline or the checker: blocked naming the prompt."""
    pool, worker = checked_pool
    before = worker.metric("imagegen_safety_check_seconds_count")
    r = req(f"a forbidden phrase {RUN}", seed=1)
    async with pool.client() as client:
        results = await client.generate([r], within=60)
    res = results[r.request_id]
    assert res.status == "blocked" and res.error is not None, res
    assert (res.error.field, res.error.limit, res.error.score) == ("prompt", "safety.blocklist",
                                                                  None)
    assert worker.metric("imagegen_safety_check_seconds_count") == before


async def _heartbeat(stack: Any, pool: Pool, worker: Worker) -> Heartbeat:
    """This worker's latest heartbeat once it reports the blocked images (beats every 1 s)."""
    client = aioredis.from_url(stack.redis_url)
    try:
        for _ in range(50):
            raw = await client.hget(naming.workers_key(NAMESPACE, pool.name), worker.name)
            if raw:
                beat = Heartbeat.model_validate(json.loads(raw))
                if beat.blocked_images:
                    return beat
            await asyncio.sleep(0.2)
        pytest.fail(f"no heartbeat with blocked_images from {worker.name}")
    finally:
        await client.aclose()
