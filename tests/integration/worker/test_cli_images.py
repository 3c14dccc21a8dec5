"""`imagegen submit --init-image / --mask` straight through Kafka (no gateway) against the
package's shared real worker: a local file goes inline, an s3:// key in the pool's bucket is
read by the worker, and the images come back at the init image's size."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from imagegen_api.naming import object_prefix
from PIL import Image

from tests.integration.worker.harness import NAMESPACE, RUN, Pool, Worker

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("imagegen"))
W, H = 80, 64


def picture() -> Image.Image:
    gx = np.tile(np.linspace(0, 255, W, dtype=np.uint8), (H, 1))
    return Image.fromarray(np.stack([gx, gx[::-1], np.full((H, W), 120, np.uint8)], axis=-1))


async def test_cli_init_image_inline_and_by_s3_key_through_kafka(
        shared: tuple[Pool, Worker], stack: Any, tmp_path: Path) -> None:
    pool, worker = shared
    init = tmp_path / "init.png"
    picture().save(init)
    mask = Image.new("L", (W, H), 0)
    mask.paste(255, (0, 0, W // 2, H))  # repaint the left half
    mask.save(tmp_path / "mask.png")
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=stack.s3_access_key,
                      aws_secret_access_key=stack.s3_secret_key)
    bucket = pool.config.storage.bucket
    key = f"{object_prefix(NAMESPACE, pool.name)}inputs/mask-{RUN}.png"
    await asyncio.to_thread(s3.upload_file, str(tmp_path / "mask.png"), bucket, key)

    def submit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, "submit", "--pool", pool.name, "-n", NAMESPACE, "--bootstrap",
             stack.kafka_bootstrap, "--redis", stack.redis_url, "--steps", "2", "--seed", "9",
             "--negative", f"cli {RUN}", "--json", "--timeout", "180", *args, "a fox"],
            capture_output=True, text=True, timeout=240, env={"PATH": "/usr/bin:/bin"})

    out = tmp_path / "out"
    done = await asyncio.to_thread(submit, "--init-image", str(init), "--mask",
                                   f"s3://{bucket}/{key}", "--strength", "0.9", "--out",
                                   str(out))
    assert done.returncode == 0, done.stderr + worker.tail()
    [res] = [json.loads(line) for line in done.stdout.splitlines()]
    assert res["status"] == "succeeded" and (res["images"][0]["width"],
                                             res["images"][0]["height"]) == (W, H), res
    [path] = list(out.iterdir())
    with Image.open(path) as img:
        assert img.size == (W, H)
        got = np.asarray(img.convert("RGB")).astype(np.int16)
    want = np.asarray(picture()).astype(np.int16)
    assert np.array_equal(got[:, W // 2:], want[:, W // 2:])  # kept half: the init image
    assert np.abs(got[:, :W // 2] - want[:, :W // 2]).mean() > 5

    # A key outside the pool's prefix is refused before anything is sent.
    done = await asyncio.to_thread(submit, "--init-image", f"s3://{bucket}/elsewhere/x.png")
    assert done.returncode == 2 and "not below the pool's prefix" in done.stderr, done.stderr
