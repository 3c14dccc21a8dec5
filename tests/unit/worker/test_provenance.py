"""Watermark and provenance: the SDXL reference watermark decodes back from generated images,
and every format carries the generation metadata where common tools read it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from imagegen_worker import encode, watermark
from PIL import Image, ImageFilter
from PIL.ExifTags import Base

PARAMS = {
    "prompt": "a fox in snow, 猫", "negative_prompt": "blurry", "width": 512, "height": 512,
    "steps": 20, "guidance": 6.5, "sampler": "dpmpp_2m", "seed": 42, "model": "sdxl",
    "model_revision": "rev-1", "adapters": [{"name": "ink", "weight": 0.7}],
    "request_id": "req-provenance-1",
}
MARK = f"dwtDct:{watermark.WATERMARK_MESSAGE:012x}"


def picture(size: int = 512, seed: int = 0) -> Image.Image:
    """A smooth, photo-like test image (what a diffusion model outputs), not flat colour."""
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 225, (size // 32, size // 32, 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BICUBIC)
    return img.filter(ImageFilter.GaussianBlur(2))


def matching_bits(img: Image.Image) -> int:
    return sum(a == b for a, b in zip(watermark.decode_bits(img), watermark.WATERMARK_BITS,
                                      strict=True))


def test_message_is_the_sdxl_reference_pipelines() -> None:
    from diffusers.pipelines.stable_diffusion_xl import watermark as sdxl

    assert watermark.WATERMARK_MESSAGE == sdxl.WATERMARK_MESSAGE
    assert watermark.WATERMARK_BITS == sdxl.WATERMARK_BITS
    assert len(watermark.WATERMARK_BITS) == 48


@pytest.mark.parametrize(("size", "seed", "least"), [(512, 2, 43), (768, 3, 44), (1024, 4, 47)])
def test_watermark_decodes_back_from_png(size: int, seed: int, least: int) -> None:
    original = picture(size, seed)
    enc = encode.encode(original, "png", PARAMS)
    with Image.open(io.BytesIO(enc.data)) as back:
        assert matching_bits(back) >= least
        assert watermark.detected(back)
    assert not watermark.detected(original)  # an unmarked image does not read as marked
    assert matching_bits(original) < 36
    assert encode.read_parameters(enc.data)["watermark"] == MARK


def test_watermark_is_invisible() -> None:
    original = picture(512, 4)
    marked = np.asarray(watermark.apply(original), dtype=np.int16)
    diff = np.abs(marked - np.asarray(original, dtype=np.int16))
    # measured: mean ~1.1, 99th percentile 11-12 levels of 255
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 16


def test_pool_can_turn_the_watermark_off() -> None:
    original = picture(512, 5)
    enc = encode.encode(original, "png", PARAMS, mark=False)
    with Image.open(io.BytesIO(enc.data)) as back:
        assert np.array_equal(np.asarray(back.convert("RGB")), np.asarray(original))
    assert "watermark" not in encode.read_parameters(enc.data)


def test_small_images_are_left_unmarked_and_say_so() -> None:
    small = picture(128, 6)
    assert watermark.apply(small) is small
    assert encode.read_parameters(encode.encode(small, "png", PARAMS).data)["watermark"] is None


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_every_format_carries_the_provenance(fmt: str) -> None:
    enc = encode.encode(picture(256, 7), fmt, PARAMS, quality=80)
    meta = encode.read_parameters(enc.data)
    for key in ("model", "model_revision", "seed", "sampler", "steps", "guidance", "adapters",
                "request_id", "prompt"):
        assert meta[key] == PARAMS[key], key
    assert enc.content_type == {"png": "image/png", "webp": "image/webp",
                                "jpeg": "image/jpeg"}[fmt]


def test_png_text_chunks_name_adapters_and_request() -> None:
    enc = encode.encode(picture(256, 8), "png", PARAMS)
    with Image.open(io.BytesIO(enc.data)) as back:
        text = back.text  # type: ignore[attr-defined]
    assert "Adapters: ink:0.7, Request id: req-provenance-1" in text["parameters"]
    assert json.loads(text["imagegen"])["request_id"] == "req-provenance-1"


@pytest.mark.parametrize("fmt", ["webp", "jpeg"])
def test_exif_holds_ascii_json_and_a_unicode_user_comment(fmt: str) -> None:
    enc = encode.encode(picture(256, 9), fmt, PARAMS)
    with Image.open(io.BytesIO(enc.data)) as back:
        exif = back.getexif()
        description = exif[Base.ImageDescription]
        assert exif[Base.Software] == "imagegen-operator"
    assert description.isascii()  # EXIF ASCII: non-ASCII escaped, not mangled
    assert json.loads(description)["prompt"] == PARAMS["prompt"]
    comment = encode.read_user_comment(enc.data)
    assert comment is not None and comment.startswith("a fox in snow, 猫")
    assert "Seed: 42" in comment and "Model: sdxl" in comment


@pytest.mark.parametrize("fmt", ["webp", "jpeg"])
def test_quality_changes_lossy_bytes(fmt: str) -> None:
    img = picture(256, 10)
    low = encode.encode(img, fmt, PARAMS, quality=10)
    high = encode.encode(img, fmt, PARAMS, quality=95)
    assert len(low.data) < len(high.data)
    with Image.open(io.BytesIO(low.data)) as back:
        assert back.format == fmt.upper() and back.size == (256, 256)


def test_png_ignores_quality() -> None:
    img = picture(256, 11)
    assert (encode.encode(img, "png", PARAMS, quality=10).sha256
            == encode.encode(img, "png", PARAMS, quality=95).sha256)
