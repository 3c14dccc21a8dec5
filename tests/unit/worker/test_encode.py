"""Encoding: generation parameters survive a round trip through PNG, WebP and JPEG bytes."""

from __future__ import annotations

import hashlib
import io

import pytest
from imagegen_worker import encode
from PIL import Image

PARAMS = {
    "prompt": 'a "quoted" <fox> & 猫\nsecond line', "negative_prompt": "blurry", "width": 64,
    "height": 64, "steps": 4, "guidance": 5.0, "sampler": "euler", "seed": 123,
    "model": "tiny", "model_revision": "abc",
}


def image() -> Image.Image:
    img = Image.new("RGB", (64, 64))
    img.putdata([(x * 4 % 256, y * 4 % 256, 128) for y in range(64) for x in range(64)])
    return img


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_parameters_round_trip(fmt: str) -> None:
    enc = encode.encode(image(), fmt, PARAMS)
    # 64x64 is below the watermark's 256x256: the metadata says it carries none.
    assert encode.read_parameters(enc.data) == {**PARAMS, "watermark": None}
    assert enc.sha256 == hashlib.sha256(enc.data).hexdigest()
    assert enc.content_type == f"image/{fmt}"
    with Image.open(io.BytesIO(enc.data)) as back:
        assert back.format == fmt.upper() and back.size == (64, 64)


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_same_pixels_and_parameters_give_the_same_bytes(fmt: str) -> None:
    assert encode.encode(image(), fmt, PARAMS).sha256 == encode.encode(image(), fmt, PARAMS).sha256
    other = {**PARAMS, "seed": 124}
    assert encode.encode(image(), fmt, PARAMS).sha256 != encode.encode(image(), fmt, other).sha256


def test_png_carries_the_parameters_text_chunk() -> None:
    enc = encode.encode(image(), "png", PARAMS)
    with Image.open(io.BytesIO(enc.data)) as back:
        text = back.text["parameters"]  # type: ignore[attr-defined]
    assert text.startswith(PARAMS["prompt"])  # type: ignore[arg-type]
    assert "Negative prompt: blurry" in text
    assert "Steps: 4, Sampler: euler, CFG scale: 5.0, Seed: 123, Size: 64x64" in text


def test_png_pixels_are_lossless() -> None:
    enc = encode.encode(image(), "png", PARAMS)
    with Image.open(io.BytesIO(enc.data)) as back:
        assert list(back.convert("RGB").getdata()) == list(image().getdata())


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="gif"):
        encode.encode(image(), "gif", PARAMS)
