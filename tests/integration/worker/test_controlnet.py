"""ControlNet through Kafka on the local stack (issue 13).

Nothing is faked: one `imagegen-worker run` process serves builtin://tiny-sdxl declaring
builtin://tiny-controlnet-sdxl as `edges` for a pool of its own (no result cache: every request
here is generated). The ControlNet is loaded when the first request names it; the control image
comes by S3 key (MinIO, the pool's bucket) and inline. Images asserted on are the objects the
worker stored, read back from MinIO.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from imagegen_api.messages import ControlChoice, GenerationRequest, ImageInput
from imagegen_api.specs import ControlNet, ImageModelSpec
from imagegen_api.workerconfig import CacheSettings, ModelEntry
from PIL import Image

from tests.integration.worker.harness import make_pool, request
from tests.integration.worker.test_generation_features import (
    DEFAULTS,
    LIMITS,
    Features,
    inline,
    mean_diff,
    png,
    rejected,
    s3_client,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def controlled(stack: Any, package_tmp: Path) -> AsyncIterator[Features]:
    pool = await make_pool(stack, package_tmp, "controlnet")
    s3 = s3_client(stack)
    await asyncio.to_thread(s3.create_bucket, Bucket=pool.config.storage.bucket)
    spec = ImageModelSpec(source="builtin://tiny-sdxl", pipeline="sdxl", dtype="float32",
                          defaults=DEFAULTS, limits=LIMITS,
                          controlnets=[ControlNet(name="edges",
                                                  source="builtin://tiny-controlnet-sdxl")])
    pool.config = pool.config.model_copy(update={
        "models": [ModelEntry(name="cn", spec=spec)], "cache": CacheSettings(enabled=False)})
    await asyncio.to_thread(pool.config_path.write_text, pool.config.dump_json())
    try:
        worker = await pool.spawn()
        yield Features(pool, worker, s3)
    finally:
        await asyncio.to_thread(pool.stop_all)


def board(phase: int = 0, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A checkerboard control image (structure, as an edge map has)."""
    yy, xx = np.indices((size[1], size[0]))
    cells = (((xx + phase) // 8 + yy // 8) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([cells] * 3, axis=-1), "RGB")


def gen(control: ControlChoice | None = None, **kw: Any) -> GenerationRequest:
    return request("a fox in the snow", model="cn", seed=5, steps=4, control=control, **kw)


async def test_control_changes_the_image_and_scale_zero_does_not(controlled: Features) -> None:
    f = controlled
    key = await asyncio.to_thread(f.put, "board.png", png(board()))
    plain, by_key, by_b64, zero, shifted = await f.generate([
        gen(),
        gen(ControlChoice(name="edges", image=ImageInput(s3_key=key))),
        gen(ControlChoice(name="edges", image=inline(png(board())))),
        gen(ControlChoice(name="edges", image=ImageInput(s3_key=key), scale=0.0)),
        gen(ControlChoice(name="edges", image=inline(png(board(phase=4))))),
    ])
    px = {name: f.pixels(r) for name, r in (("plain", plain), ("key", by_key),
                                            ("b64", by_b64), ("zero", zero),
                                            ("shifted", shifted))}
    assert mean_diff(px["key"], px["plain"]) > 3, "the ControlNet did not change the image"
    assert mean_diff(px["key"], px["b64"]) <= 1  # same image by key and inline
    assert mean_diff(px["shifted"], px["key"]) > 1.5  # the control image decides how
    assert np.abs(px["zero"] - px["plain"]).max() <= 2  # scale 0: no control
    assert "ControlNet edges loaded" in f.worker.tail(200)


async def test_bad_control_is_rejected_naming_the_field(controlled: Features) -> None:
    f = controlled
    bad = await f.generate([
        gen(ControlChoice(name="depth", image=inline(png(board())))),
        gen(ControlChoice(name="edges", image=inline(png(board(size=(96, 64)))))),
        gen(ControlChoice(name="edges", image=inline(png(board())), scale=3.0)),
    ])
    rejected(bad[0], "control.name", "'depth'", "one of: edges")
    rejected(bad[1], "control.image", "96x64", "64x64")
    rejected(bad[2], "control.scale", "0..2")
    assert await f.pool.wait_lag_zero() == 0  # answered, and the offsets committed
