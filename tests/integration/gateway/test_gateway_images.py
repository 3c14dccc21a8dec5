"""OpenAI's `quality`, `output_format` and `output_compression`, and img2img / inpainting from
the `imagegen` CLI, through a real gateway process in front of a real worker pool (the same
`served` fixture as test_gateway: builtin://tiny-sdxl, default 2 steps, at most 4). Every image
asserted on is read back from MinIO and decoded."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from imagegen_api.messages import IMAGE_INPUT_MAX_BYTES
from imagegen_api.naming import object_prefix
from imagegen_worker import encode
from PIL import Image

from tests.integration.gateway.test_gateway import KEYS, Gateway, fetch, served
from tests.integration.worker.harness import NAMESPACE, RUN, Pool

pytestmark = pytest.mark.integration
__all__ = ["served"]

CLI = str(Path(sys.executable).with_name("imagegen"))
W, H = 72, 64  # not the model's default size: img2img takes the init image's


def generate(gw: Gateway, **kw: Any) -> bytes:
    resp = gw.client().images.generate(
        model="tiny", prompt="a harbour at night", size="64x64", response_format="b64_json",
        extra_body={"seed": 5, "negative_prompt": f"run {RUN}"}, **kw)
    assert resp.data is not None and len(resp.data) == 1 and resp.data[0].b64_json
    return base64.b64decode(resp.data[0].b64_json)


def decoded(data: bytes) -> tuple[str, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return str(img.format), img.size


async def test_quality_and_output_format_map_onto_steps_and_encoding(
        served: tuple[Pool, Gateway]) -> None:
    _, gw = served
    hd = await asyncio.to_thread(generate, gw, quality="hd", output_format="jpeg",
                                 output_compression=95)
    low = await asyncio.to_thread(generate, gw, quality="low", output_format="jpeg",
                                  output_compression=10)
    webp = await asyncio.to_thread(generate, gw, quality="standard", output_format="webp")
    png = await asyncio.to_thread(generate, gw, quality="auto")
    assert decoded(hd) == decoded(low) == ("JPEG", (64, 64))
    assert decoded(webp) == ("WEBP", (64, 64)) and decoded(png) == ("PNG", (64, 64))
    # The model's default is 2 steps: hd 1.5x → 3, low 0.5x → 1, standard and auto → 2.
    steps = [encode.read_parameters(b)["steps"] for b in (hd, low, webp, png)]
    assert steps == [3, 1, 2, 2]
    assert len(low) < len(hd)  # output_compression is the jpeg quality


@pytest.mark.parametrize(("kw", "param"), [
    ({"quality": "ultra"}, "quality"),
    ({"output_format": "gif"}, "output_format"),
    ({"output_format": "png", "output_compression": 50}, "output_compression"),
    ({"output_format": "jpeg", "output_compression": 101}, "output_compression"),
])
async def test_bad_values_are_400_naming_the_field(served: tuple[Pool, Gateway],
                                                   kw: dict[str, Any], param: str) -> None:
    _, gw = served
    with pytest.raises(openai.BadRequestError) as err:
        await asyncio.to_thread(generate, gw, **kw)
    body = err.value.body
    assert isinstance(body, dict) and body.get("param") == param, body
    assert err.value.status_code == 400


# --- img2img / inpainting from the CLI, through the gateway ----------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}  # no IMAGEGEN_* from the caller
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=240, env=env)


def init_picture() -> Image.Image:
    gx = np.tile(np.linspace(0, 255, W, dtype=np.uint8), (H, 1))
    gy = np.tile(np.linspace(255, 0, H, dtype=np.uint8)[:, None], (1, W))
    return Image.fromarray(np.stack([gx, gy, np.full((H, W), 60, np.uint8)], axis=-1), "RGB")


def centre_mask(w: int = W, h: int = H) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    mask.paste(255, (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    return mask


def save(img: Image.Image, path: Path) -> str:
    img.save(path, format="PNG")
    return str(path)


def submit(gw: Gateway, out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                         list[dict[str, Any]]]:
    done = cli("submit", "--gateway", gw.url, "--api-key", KEYS["all"], "--model", "tiny",
               "--steps", "4", "--seed", "3", "--negative", f"cli {RUN}", "--json",
               "--out", str(out), *args, "a fox in the snow")
    return done, [json.loads(line) for line in done.stdout.splitlines()]


async def test_cli_init_image_and_mask_through_the_gateway(served: tuple[Pool, Gateway],
                                                          stack: Any, tmp_path: Path) -> None:
    pool, gw = served
    init = init_picture()
    init_file = save(init, tmp_path / "init.png")
    mask_file = save(centre_mask(), tmp_path / "mask.png")
    # Inline (local files): the result takes the init image's size; outside the mask the
    # init image pixel for pixel.
    done, [res] = await asyncio.to_thread(
        submit, gw, tmp_path / "a", "--init-image", init_file, "--mask", mask_file,
        "--strength", "0.9")
    assert done.returncode == 0 and res["status"] == "succeeded", done.stderr + gw.tail()
    [path] = sorted((tmp_path / "a").iterdir())
    with Image.open(path) as img:
        assert (img.format, img.size) == ("PNG", (W, H))
        got = np.asarray(img.convert("RGB")).astype(np.int16)
    keep = np.asarray(centre_mask()) == 0
    want = np.asarray(init).astype(np.int16)
    assert np.array_equal(got[keep], want[keep])
    assert np.abs(got[~keep] - want[~keep]).mean() > 5

    # By S3 key in the pool's bucket, as jpeg with a quality.
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=stack.s3_access_key,
                      aws_secret_access_key=stack.s3_secret_key)
    bucket = pool.config.storage.bucket
    key = f"{object_prefix(NAMESPACE, pool.name)}inputs/init.png"
    await asyncio.to_thread(s3.upload_file, init_file, bucket, key)
    done, [res] = await asyncio.to_thread(
        submit, gw, tmp_path / "b", "--init-image", f"s3://{bucket}/{key}", "--strength", "0.6",
        "--format", "jpeg", "--quality", "80")
    assert done.returncode == 0 and res["status"] == "succeeded", done.stderr + gw.tail()
    data = await asyncio.to_thread(fetch, res["images"][0]["url"])
    assert decoded(data) == ("JPEG", (W, H))

    # The worker's refusal comes back naming the field: a mask of another size.
    small = save(centre_mask(64, 64), tmp_path / "small.png")
    done, [res] = await asyncio.to_thread(
        submit, gw, tmp_path / "c", "--init-image", init_file, "--mask", small)
    assert done.returncode == 1 and res["status"] == "rejected", done.stderr
    assert res["error"]["field"] == "mask" and "72x64" in res["error"]["limit"], res


async def test_cli_refuses_an_inline_file_over_the_limit(served: tuple[Pool, Gateway],
                                                         tmp_path: Path) -> None:
    _, gw = served
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * IMAGE_INPUT_MAX_BYTES)
    done, _ = await asyncio.to_thread(submit, gw, tmp_path / "d", "--init-image", str(big))
    assert done.returncode == 2
    assert f"over the limit of {IMAGE_INPUT_MAX_BYTES} bytes" in done.stderr, done.stderr
    assert "--init-image" in done.stderr
