"""Issue 13's generation features through Kafka on the local stack: LoRA adapters per request,
img2img and inpainting, and the output formats with watermark and provenance.

Nothing is faked: one `imagegen-worker run` process serves two models of builtin://tiny-sdxl for
a pool of its own: `plain`, and `styled`, which declares two LoRA adapters made in code (peft on
the built-in UNet with random weights, saved in diffusers' LoRA format, as the unit tests make
them) and uploaded to the pool's bucket in MinIO, so the worker fetches them as s3:// sources.
Requests go through Kafka; every image asserted on is the object the worker stored, read back
from MinIO (bytes, content type). The pool runs without the result cache: a request repeated
here must be generated again, never answered from an earlier one.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
from imagegen_api.messages import (
    IMAGE_INPUT_MAX_BYTES,
    GenerationRequest,
    GenerationResult,
    Heartbeat,
    ImageInput,
    LoraChoice,
)
from imagegen_api.naming import object_prefix, workers_key
from imagegen_api.specs import GenerationDefaults, ImageModelSpec, LoraAdapter, ModelLimits
from imagegen_api.workerconfig import CacheSettings, ModelEntry
from imagegen_worker import encode, watermark
from PIL import Image

from tests.integration.worker.harness import NAMESPACE, Pool, Worker, make_pool, request
from tests.unit.worker.test_pipelines import make_lora

pytestmark = pytest.mark.integration

LIMITS = ModelLimits(max_pixels=256 * 256, max_steps=4, max_prompt_tokens=20,
                     max_images_per_request=2)
DEFAULTS = GenerationDefaults(width=64, height=64, steps=2, guidance=5.0, sampler="euler")
WITHIN = 240.0


def s3_client(stack: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=stack.s3_access_key,
                        aws_secret_access_key=stack.s3_secret_key,
                        config=Config(s3={"addressing_style": "path"}))


class Features:
    """The pool, its worker, and MinIO as the tests read it."""

    def __init__(self, pool: Pool, worker: Worker, s3: Any) -> None:
        self.pool, self.worker, self.s3 = pool, worker, s3
        self.bucket = pool.config.storage.bucket
        self.prefix = object_prefix(NAMESPACE, pool.name)

    async def generate(self, requests: Sequence[GenerationRequest]
                       ) -> list[GenerationResult]:
        """Submit all at once (one burst); the results in request order."""
        async with self.pool.client() as client:
            results = await client.generate(requests, within=WITHIN)
        missing = [r.request_id for r in requests if r.request_id not in results]
        assert not missing, f"no result for {missing}:\n{self.worker.tail()}"
        return [results[r.request_id] for r in requests]

    async def one(self, req: GenerationRequest) -> GenerationResult:
        [result] = await self.generate([req])
        return result

    def fetch(self, result: GenerationResult) -> tuple[bytes, str]:
        """The stored image's bytes and content type, from MinIO."""
        assert result.status == "succeeded", result
        [ref] = result.images
        obj = self.s3.get_object(Bucket=self.bucket, Key=ref.key)
        return obj["Body"].read(), obj["ContentType"]

    def pixels(self, result: GenerationResult) -> np.ndarray:
        data, _ = self.fetch(result)
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB")).astype(np.int16)

    def put(self, name: str, data: bytes) -> str:
        key = f"{self.prefix}inputs/{name}"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="image/png")
        return key


@pytest.fixture(scope="module")
async def features(stack: Any, package_tmp: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Features]:
    pool = await make_pool(stack, package_tmp, "features")
    s3 = s3_client(stack)
    bucket = pool.config.storage.bucket
    await asyncio.to_thread(s3.create_bucket, Bucket=bucket)
    sources = {}
    for name, seed in (("style", 7), ("ink", 11)):
        path = await asyncio.to_thread(make_lora, tmp_path_factory.mktemp(name), seed=seed)
        key = f"loras/{name}/{path.name}"
        await asyncio.to_thread(s3.upload_file, str(path), bucket, key)
        sources[name] = f"s3://{bucket}/{key}"
    plain = ImageModelSpec(source="builtin://tiny-sdxl", pipeline="sdxl", dtype="float32",
                           defaults=DEFAULTS, limits=LIMITS)
    styled = plain.model_copy(update={"loras": [
        LoraAdapter(name="style", source=sources["style"], weight=1.0),
        LoraAdapter(name="ink", source=sources["ink"], weight=0.5)]})
    pool.config = pool.config.model_copy(update={
        "models": [ModelEntry(name="plain", spec=plain), ModelEntry(name="styled", spec=styled)],
        "cache": CacheSettings(enabled=False)})
    await asyncio.to_thread(pool.config_path.write_text, pool.config.dump_json())
    try:
        worker = await pool.spawn()
        yield Features(pool, worker, s3)
    finally:
        await asyncio.to_thread(pool.stop_all)


def rejected(result: GenerationResult, field: str, *words: str) -> None:
    assert result.status == "rejected", result
    assert result.error is not None and result.error.field == field, result
    assert result.error.limit, result
    for word in words:
        assert word in result.error.message + " " + result.error.limit, result
    assert not result.images


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


# --- LoRA ------------------------------------------------------------------------------------


def lora_request(loras: list[tuple[str, float]] | None, *, model: str = "styled",
                 seed: int = 5) -> GenerationRequest:
    choices = None if loras is None else [LoraChoice(name=n, weight=w) for n, w in loras]
    return request("a watercolour fox", model=model, seed=seed, steps=2, loras=choices)


class TestLoras:
    async def test_adapters_change_pixels_and_weight_zero_is_none(
            self, features: Features) -> None:
        f = features
        refs: dict[str, GenerationResult] = {}
        # One at a time: each its own batch, nothing before it in the same burst.
        for label, loras, model in (("plain", None, "plain"), ("none", [], "styled"),
                                    ("style", [("style", 1.0)], "styled"),
                                    ("ink", [("ink", 1.0)], "styled"),
                                    ("zero", [("style", 0.0)], "styled"),
                                    ("declared", None, "styled")):
            refs[label] = await f.one(lora_request(loras, model=model))
        px = {label: f.pixels(r) for label, r in refs.items()}
        # The base weights draw the same picture through either model; weight 0 is no adapter.
        assert np.array_equal(px["none"], px["plain"])
        assert np.array_equal(px["zero"], px["none"])
        for label in ("style", "ink", "declared"):
            assert mean_diff(px[label], px["none"]) > 1.0, label
        assert mean_diff(px["style"], px["ink"]) > 1.0
        # No `loras`: the declared adapters at their declared weights (style 1.0 + ink 0.5).
        assert mean_diff(px["declared"], px["style"]) > 0.5
        # The adapters are part of the revision and of the provenance in the PNG.
        assert "+lora:" in (refs["style"].model_revision or "")
        meta = encode.read_parameters(f.fetch(refs["style"])[0])
        assert meta["adapters"] == [{"name": "style", "weight": 1.0}], meta
        assert not encode.read_parameters(f.fetch(refs["zero"])[0]).get("adapters")

        # One burst mixing adapter sets: each request gets its own adapters' picture.
        mix = ["style", "ink", "none", "ink", "style", "none"]
        sets: dict[str, list[tuple[str, float]]] = {"style": [("style", 1.0)],
                                                     "ink": [("ink", 1.0)], "none": []}
        burst = await f.generate([lora_request(sets[label]) for label in mix])
        for label, result in zip(mix, burst, strict=True):
            got = f.pixels(result)
            own = mean_diff(got, px[label])
            others = [mean_diff(got, px[o]) for o in sets if o != label]
            # Batched with others of its set, floats may differ in the last bit: not more.
            assert own <= 0.05 and np.abs(got - px[label]).max() <= 2, (label, own)
            assert min(others) > 1.0, (label, others)

    async def test_heartbeat_lists_the_loaded_adapters(self, features: Features) -> None:
        f = features
        client = aioredis.from_url(f.pool.stack.redis_url)
        try:
            raw = await client.hget(workers_key(NAMESPACE, f.pool.name), f.worker.name)
        finally:
            await client.aclose()
        assert raw is not None
        hb = Heartbeat.from_bytes(raw)
        assert sorted(hb.loras) == ["styled/ink", "styled/style"], hb

    async def test_an_undeclared_adapter_is_rejected_naming_it(self, features: Features
                                                               ) -> None:
        f = features
        results = await f.generate([
            lora_request([("style", 1.0), ("sepia", 0.7)]),
            lora_request([("style", 1.0)], model="plain"),
            lora_request([("ink", 2.5)]),
        ])
        rejected(results[0], "loras[1].name", "sepia", "style", "ink")
        rejected(results[1], "loras[0].name", "declares none")
        rejected(results[2], "loras[0].weight", "2.5")
        assert await f.pool.wait_lag_zero() == 0


# --- img2img and inpainting ------------------------------------------------------------------

W, H = 96, 64  # not square, not the model's default size: the result must take the init's size


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def init_picture() -> Image.Image:
    gx = np.tile(np.linspace(0, 255, W, dtype=np.uint8), (H, 1))
    gy = np.tile(np.linspace(255, 0, H, dtype=np.uint8)[:, None], (1, W))
    return Image.fromarray(np.stack([gx, gy, np.full((H, W), 90, np.uint8)], axis=-1), "RGB")


def centre_mask(w: int = W, h: int = H) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    mask.paste(255, (w // 4, h // 4, 3 * w // 4, 3 * h // 4))  # repaint the centre only
    return mask


def inline(data: bytes) -> ImageInput:
    return ImageInput(b64=base64.b64encode(data).decode())


def i2i(init: ImageInput | None, *, seed: int = 3, **kw: Any) -> GenerationRequest:
    return request("a fox in the snow", model="plain", seed=seed, steps=4, init_image=init,
                   **kw)


class TestImg2Img:
    async def test_init_image_by_key_and_inline_and_inpainting(self, features: Features
                                                               ) -> None:
        f = features
        init = init_picture()
        key = await asyncio.to_thread(f.put, "init.png", png(init))
        by_key, by_b64, t2i, weak, painted, painted2 = await f.generate([
            i2i(ImageInput(s3_key=key), strength=0.9),
            i2i(inline(png(init)), strength=0.9),
            request("a fox in the snow", model="plain", seed=3, steps=4, width=W, height=H),
            i2i(ImageInput(s3_key=key), strength=0.5),
            i2i(ImageInput(s3_key=key), strength=0.9, mask=inline(png(centre_mask()))),
            i2i(ImageInput(s3_key=key), strength=0.9, mask=inline(png(centre_mask())),
                seed=4),
        ])
        for result in (by_key, by_b64, weak, painted, painted2):
            [ref] = result.images if result.status == "succeeded" else [None]
            assert ref is not None, result
            assert (ref.width, ref.height) == (W, H), result
        px = {name: f.pixels(r) for name, r in (("key", by_key), ("b64", by_b64), ("t2i", t2i),
                                                  ("weak", weak), ("painted", painted),
                                                  ("painted2", painted2))}
        for name, arr in px.items():
            assert arr.shape == (H, W, 3), name
        # The same picture either way it arrives; the init image and the strength matter.
        assert np.abs(px["key"] - px["b64"]).max() <= 1
        assert mean_diff(px["key"], px["t2i"]) > 5
        assert mean_diff(px["key"], px["weak"]) > 1
        # Inpainting: outside the mask the init image pixel for pixel, inside repainted (and
        # the seed decides what).
        keep = np.asarray(centre_mask()) == 0
        init_px = np.asarray(init).astype(np.int16)
        for name in ("painted", "painted2"):
            assert np.array_equal(px[name][keep], init_px[keep]), name
            assert mean_diff(px[name][~keep], init_px[~keep]) > 5, name
        assert mean_diff(px["painted"][~keep], px["painted2"][~keep]) > 1
        meta = encode.read_parameters(f.fetch(painted)[0])
        assert (meta["width"], meta["height"], meta["seed"]) == (W, H, 3), meta

    async def test_bad_inputs_are_rejected_naming_the_field(self, features: Features) -> None:
        f = features
        init = png(init_picture())
        key = await asyncio.to_thread(f.put, "init-rej.png", init)
        big = base64.b64encode(b"\0" * (IMAGE_INPUT_MAX_BYTES + 3)).decode()
        cases = [
            (i2i(inline(b"GIF89a not an image at all")), "init_image", ("PNG",)),
            (i2i(ImageInput(s3_key=key), mask=inline(png(centre_mask(64, 64)))), "mask",
             ("64x64", f"{W}x{H}")),
            (i2i(ImageInput(s3_key=key), strength=1.5), "strength", ("1.5",)),
            (i2i(ImageInput(s3_key=key), strength=0.0), "strength", ("0 < strength",)),
            (i2i(ImageInput(s3_key=f"{f.prefix}inputs/missing.png")), "init_image.s3_key",
             ("does not exist",)),
            (i2i(ImageInput(s3_key="other-ns/other-pool/x.png")), "init_image.s3_key",
             (f.prefix,)),
            (i2i(ImageInput(b64=big)), "init_image.b64", (str(IMAGE_INPUT_MAX_BYTES),)),
            (i2i(ImageInput(s3_key=key), width=64, height=64), "init_image", ("64x64",)),
            (i2i(None, mask=inline(png(centre_mask()))), "mask", ("init_image",)),
            (i2i(None, strength=0.5), "strength", ("init_image",)),
        ]
        results = await f.generate([req for req, _, _ in cases])
        for (_, field, words), result in zip(cases, results, strict=True):
            rejected(result, field, *words)
        assert await f.pool.wait_lag_zero() == 0  # answered, and the offsets committed


# --- output formats, watermark, provenance ---------------------------------------------------

SIDE = 256  # the watermark scheme's minimum


def fmt_request(fmt: str, quality: int | None = None) -> GenerationRequest:
    return request("a lighthouse at dawn", model="plain", seed=21, steps=2, width=SIDE,
                   height=SIDE, output_format=fmt, quality=quality)


class TestOutputFormats:
    async def test_formats_quality_provenance_and_watermark(self, features: Features) -> None:
        f = features
        asked = [("png", None, "PNG", "image/png"), ("webp", 90, "WEBP", "image/webp"),
                 ("jpeg", 95, "JPEG", "image/jpeg"), ("jpeg", 20, "JPEG", "image/jpeg"),
                 ("jpg", None, "JPEG", "image/jpeg")]
        requests = [fmt_request(fmt, q) for fmt, q, _, _ in asked]
        results = await f.generate(requests)
        stored: dict[tuple[str, int | None], bytes] = {}
        for (fmt, quality, pil_fmt, ctype), req, result in zip(asked, requests, results,
                                                               strict=True):
            data, content_type = f.fetch(result)
            [ref] = result.images
            assert content_type == ctype, (fmt, content_type)
            assert ref.key.startswith(f.prefix) and ref.key.endswith(f".{ref.format}"), ref
            with Image.open(io.BytesIO(data)) as img:
                assert img.format == pil_fmt and img.size == (SIDE, SIDE), (fmt, img.format)
                img.load()  # the bytes decode as a whole, not only the header
            # Provenance: PNG text chunks, WebP/JPEG EXIF (ImageDescription JSON, UserComment).
            meta = encode.read_parameters(data)
            assert meta["request_id"] == req.request_id, meta
            assert (meta["seed"], meta["steps"], meta["sampler"], meta["guidance"]) == (
                21, 2, "euler", 5.0), meta
            assert meta["model"] == "plain" and meta["model_revision"] == result.model_revision
            assert meta["watermark"] == f"{watermark.METHOD}:{watermark.WATERMARK_MESSAGE:012x}"
            if pil_fmt == "PNG":
                with Image.open(io.BytesIO(data)) as img:
                    text = dict(getattr(img, "text", {}))
                assert json.loads(text["imagegen"]) == meta
                assert "Seed: 21" in text["parameters"] and "Steps: 2" in text["parameters"]
            else:
                comment = encode.read_user_comment(data)
                assert comment is not None and "Seed: 21" in comment, comment
            stored[(fmt, quality)] = data
        # Lossy quality: a lower quality is a smaller file (and a different one).
        assert len(stored[("jpeg", 20)]) < 0.7 * len(stored[("jpeg", 95)]), {
            k: len(v) for k, v in stored.items()}
        # The invisible watermark reads back from the PNG stored in MinIO.
        with Image.open(io.BytesIO(stored[("png", None)])) as img:
            bits = watermark.decode_bits(img)
            assert watermark.detected(img)
        matching = sum(a == b for a, b in zip(bits, watermark.WATERMARK_BITS, strict=True))
        assert matching >= watermark.DETECT_BITS, matching

    async def test_bad_format_and_quality_are_rejected(self, features: Features) -> None:
        f = features
        results = await f.generate([fmt_request("gif"), fmt_request("jpeg", 0),
                                    fmt_request("webp", 101)])
        rejected(results[0], "output_format", "gif", "png, webp, jpeg")
        rejected(results[1], "quality", "1..100")
        rejected(results[2], "quality", "101")
        assert await f.pool.wait_lag_zero() == 0
