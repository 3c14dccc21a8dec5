"""Flow-matching families end to end: builtin://tiny-sd3 and builtin://tiny-flux served by a
real worker process, prompts through Kafka, images back through S3.

Nothing is faked: one `imagegen-worker run` process serves both tiny models for a pool of its
own (real Kafka, Redis, MinIO). Asserted: every request of each family succeeds with the
model's builtin revision at the requested (non-square) size, each image is the one the same
model draws in this process for the same seed (the worker ran the family's pipeline with a
flow-matching scheduler, not a UNet one), and a sampler or negative prompt the family cannot
use comes back rejected through Kafka, naming the field and the allowed values.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from imagegen_api.messages import GenerationRequest
from imagegen_api.specs import GenerationDefaults, ImageModelSpec, ModelLimits
from imagegen_api.workerconfig import ModelEntry
from imagegen_client import new_request_id
from imagegen_worker.pipelines import ImageJob, ModelRunner
from PIL import Image

from tests.integration.worker.harness import Pool, make_pool

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:6]  # result cache keys name the model: every image is drawn now
FAMILIES = {"sd3": "builtin://tiny-sd3", "flux": "builtin://tiny-flux"}
SAMPLER = {"sd3": "heun", "flux": "euler"}  # sd3's default is not euler: the table is read
WIDTH, HEIGHT, STEPS, SEEDS = 96, 64, 2, (5, 6)


def spec(family: str) -> ImageModelSpec:
    return ImageModelSpec(
        source=FAMILIES[family], pipeline=family, dtype="float32",  # type: ignore[arg-type]
        defaults=GenerationDefaults(width=64, height=64, steps=STEPS, guidance=3.5,
                                    sampler=SAMPLER[family]),
        limits=ModelLimits(max_pixels=128 * 128, max_steps=4, max_prompt_tokens=40,
                           max_images_per_request=1))


def model(family: str) -> str:
    return f"{family}-{RUN}"


@pytest.fixture(scope="module")
async def flow_pool(stack: Any, package_tmp: Path) -> AsyncIterator[Pool]:
    pool = await make_pool(stack, package_tmp, "flow")
    entries = [ModelEntry(name=model(f), spec=spec(f)) for f in FAMILIES]
    pool.config = pool.config.model_copy(update={"models": entries})
    await asyncio.to_thread(pool.config_path.write_text, pool.config.dump_json())
    try:
        await pool.spawn()
        yield pool
    finally:
        await asyncio.to_thread(pool.stop_all)


def request(family: str, seed: int, **kw: Any) -> GenerationRequest:
    fields = {"width": WIDTH, "height": HEIGHT, **kw}
    return GenerationRequest(request_id=new_request_id("flow"), model=model(family),
                             tier="fast", seed=seed, prompt="a photo of a red cat", **fields)


@pytest.mark.parametrize("family", list(FAMILIES))
async def test_each_flow_family_generates_end_to_end(
        flow_pool: Pool, family: str, tmp_path: Path) -> None:
    requests = [request(family, seed) for seed in SEEDS]
    async with flow_pool.client() as client:
        results = await client.generate(requests, within=240)
        ordered = [results[r.request_id] for r in requests]
        for result in ordered:
            assert result.status == "succeeded", result
            assert result.model_revision == f"builtin:tiny-{family}:v1"
        paths = await client.download(ordered, tmp_path)

    local = ModelRunner.load(family, spec(family))
    drawn = []
    for seed, path in zip(SEEDS, paths, strict=True):
        with Image.open(path) as img:
            got = np.asarray(img.convert("RGB")).astype(int)
        assert got.shape == (HEIGHT, WIDTH, 3)
        (want,) = local.generate([ImageJob(
            prompt="a photo of a red cat", negative_prompt="", width=WIDTH, height=HEIGHT,
            steps=STEPS, guidance=3.5, sampler=SAMPLER[family], seed=seed)])
        # Same weights, scheduler and seed; a batch of two may round a level on a few pixels.
        diff = np.abs(got - np.asarray(want).astype(int))
        assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 100, (seed, diff.max())
        drawn.append(got)
    assert np.abs(drawn[0] - drawn[1]).mean() > 1.0, "two seeds, two images"


@pytest.mark.parametrize(("family", "body", "field", "limit"), [
    ("sd3", {"sampler": "ddim"}, "sampler", "one of: euler, heun"),
    ("flux", {"sampler": "heun"}, "sampler", "one of: euler"),
    ("flux", {"negative_prompt": "blurry"}, "negative_prompt", "empty"),
    ("flux", {"width": 72}, "width", "multiple of 16"),
])
async def test_what_a_flow_family_cannot_do_is_rejected_through_kafka(
        flow_pool: Pool, family: str, body: dict[str, Any], field: str, limit: str) -> None:
    req = request(family, 1, **body)
    async with flow_pool.client() as client:
        result = (await client.generate([req], within=60))[req.request_id]
    assert result.status == "rejected", result
    assert result.error is not None
    assert (result.error.field, result.error.limit) == (field, limit)
    assert f"pipeline {family}" in result.error.message
