"""img2img / inpainting inputs: validation of the fields, decoding and size checks, cache keys
and batch keys. Pure: the S3 fetch is a dict lookup (what ObjectStore.read_head answers)."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace
from typing import Any

import pytest
from imagegen_api.messages import IMAGE_INPUT_MAX_BYTES, IMAGE_OBJECT_MAX_BYTES, ImageInput
from imagegen_worker import cachekey, initimage, jobs, validate
from imagegen_worker.validate import Rejection, ValidRequest
from PIL import Image

NOW = 1_700_000_000.0
PREFIX = "ns/tiny/"


def png(w: int = 64, h: int = 64, colour: int | tuple[int, ...] = (200, 30, 30),
        mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), colour).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def run(config: Any, **kw: Any) -> validate.Outcome:
    body = {"request_id": "r-1", "prompt": "a red fox", **kw}
    return validate.validate(json.dumps(body).encode(), key=b"r-1", tier="fast", config=config,
                             count_tokens=lambda _m, t: len(t.split()), now=NOW,
                             fallback_id="invalid:t:0:1")


def rejected(out: validate.Outcome, field: str, limit: str) -> None:
    assert isinstance(out, Rejection), out
    assert out.error.field == field, out.error
    assert out.error.limit is not None and limit in out.error.limit, out.error
    assert out.request_id == "r-1"


@pytest.mark.parametrize(("kw", "field", "limit"), [
    ({"strength": 0.5}, "strength", "only with init_image"),
    ({"mask": b64(png())}, "mask", "only with init_image"),
    ({"init_image": b64(png()), "strength": 0}, "strength", "0 < strength <= 1"),
    ({"init_image": b64(png()), "strength": 1.5}, "strength", "0 < strength <= 1"),
    ({"init_image": b64(png()), "strength": -0.1}, "strength", "0 < strength <= 1"),
    ({"init_image": {}}, "init_image", "one of s3_key, b64"),
    ({"init_image": {"b64": "AA==", "s3_key": PREFIX + "x.png"}}, "init_image",
     "one of s3_key, b64"),
    ({"init_image": {"s3_key": "other/pool/x.png"}}, "init_image.s3_key", "below ns/tiny/"),
    ({"init_image": {"s3_key": PREFIX + "../other/x.png"}}, "init_image.s3_key", "below"),
    ({"init_image": {"b64": "A" * (initimage.b64_limit_chars() + 4)}}, "init_image.b64",
     f"{IMAGE_INPUT_MAX_BYTES} bytes"),
    ({"init_image": b64(png()), "mask": {"s3_key": "elsewhere.png"}}, "mask.s3_key", "below"),
])
def test_fields_are_checked_by_the_validator(config: Any, kw: dict[str, Any], field: str,
                                             limit: str) -> None:
    rejected(run(config, **kw), field, limit)


def test_an_accepted_request_carries_the_spec_and_default_strength(config: Any) -> None:
    out = run(config, init_image={"s3_key": PREFIX + "in/a.png"})
    assert isinstance(out, ValidRequest)
    assert out.init is not None and out.init.strength == initimage.DEFAULT_STRENGTH
    assert out.init.size_given is False and out.conditioning is None
    with pytest.raises(ValueError, match="not resolved"):
        jobs.image_jobs(out, [1])  # never generated before intake resolved it


def spec(image: bytes | ImageInput, mask: bytes | ImageInput | None = None, *,
         strength: float = 0.6, size_given: bool = True) -> initimage.InitSpec:
    def as_input(x: bytes | ImageInput) -> ImageInput:
        return x if isinstance(x, ImageInput) else ImageInput(**b64(x))
    return initimage.InitSpec(image=as_input(image), mask=None if mask is None else as_input(mask),
                              strength=strength, size_given=size_given)


def resolve(s: initimage.InitSpec, objects: dict[str, bytes] | None = None,
            width: int = 64, height: int = 64, max_pixels: int = 128 * 128
            ) -> tuple[initimage.Conditioning, int, int]:
    store = objects or {}

    def fetch(key: str, limit: int) -> bytes | None:
        data = store.get(key)
        return None if data is None else data[:limit + 1]
    return initimage.resolve(s, width=width, height=height, max_pixels=max_pixels, fetch=fetch)


def error(s: initimage.InitSpec, **kw: Any) -> initimage.InputError:
    with pytest.raises(initimage.InputError) as caught:
        resolve(s, **kw)
    return caught.value


def test_decodes_inline_and_s3_images_and_their_digests_agree() -> None:
    data = png()
    inline, w, h = resolve(spec(data, png(colour=255, mode="L")))
    named, _, _ = resolve(spec(ImageInput(s3_key=PREFIX + "a.png")), {PREFIX + "a.png": data})
    assert (w, h) == (64, 64) and inline.mode == "inpaint" and named.mode == "img2img"
    assert inline.image.mode == "RGB" and inline.mask is not None and inline.mask.mode == "L"
    assert inline.image_sha256 == named.image_sha256 and named.mask_sha256 is None
    assert inline.image.getpixel((3, 3)) == (200, 30, 30)


def test_without_a_requested_size_the_init_image_decides_it() -> None:
    _, w, h = resolve(spec(png(128, 64), size_given=False))
    assert (w, h) == (128, 64)


@pytest.mark.parametrize(("s", "kw", "field", "limit", "code"), [
    (spec(b"not an image at all"), {}, "init_image", "PNG", "invalid_field"),
    (spec(ImageInput(b64="!!not base64!!")), {}, "init_image.b64", "base64", "invalid_field"),
    (spec(png(), b"\x89PNG broken"), {}, "mask", "PNG", "invalid_field"),
    (spec(png(64, 64), png(64, 128, 255, "L")), {}, "mask", "64x64", "invalid_field"),
    (spec(png(128, 64)), {}, "init_image", "64x64", "invalid_field"),
    (spec(png(70, 64), size_given=False), {}, "init_image", "multiple of 8", "invalid_field"),
    (spec(png(256, 256), size_given=False), {}, "init_image", "maxPixels=16384",
     "limit_exceeded"),
    (spec(ImageInput(s3_key=PREFIX + "gone.png")), {}, "init_image.s3_key", "existing object",
     "not_found"),
    (spec(ImageInput(s3_key=PREFIX + "big.png")),
     {"objects": {PREFIX + "big.png": b"x" * (IMAGE_OBJECT_MAX_BYTES + 10)}},
     "init_image.s3_key", f"{IMAGE_OBJECT_MAX_BYTES} bytes", "limit_exceeded"),
])
def test_bad_inputs_are_rejected_naming_field_and_limit(
        s: initimage.InitSpec, kw: dict[str, Any], field: str, limit: str, code: str) -> None:
    err = error(s, **kw)
    assert (err.field, err.code) == (field, code), str(err)
    assert limit in err.limit, err.limit


def test_an_inline_payload_over_the_limit_is_refused_after_decoding() -> None:
    # base64 whose length passes the character check only just, decoding one byte over.
    raw = b"\0" * (IMAGE_INPUT_MAX_BYTES + 1)
    err = error(spec(raw))
    assert err.field == "init_image.b64" and err.code == "limit_exceeded"


def test_a_huge_image_in_a_small_file_is_refused_before_decoding_its_pixels() -> None:
    bomb = png(4096, 4096, 0, "L")  # a few KiB of PNG, 16 Mpx
    assert len(bomb) < 100_000
    err = error(spec(bomb, size_given=False))
    assert err.code == "limit_exceeded" and "16777216 pixels" in str(err)


def valid(config: Any, **kw: Any) -> ValidRequest:
    out = run(config, seed=7, **kw)
    assert isinstance(out, ValidRequest)
    if out.init is None:
        return out
    cond, w, h = resolve(out.init)
    return replace(out, width=w, height=h, conditioning=cond)


def test_cache_and_batch_keys_follow_init_image_mask_and_strength(config: Any) -> None:
    plain = valid(config)
    red = valid(config, init_image=b64(png()), strength=0.5)
    blue = valid(config, init_image=b64(png(colour=(0, 0, 250))), strength=0.5)
    weaker = valid(config, init_image=b64(png()), strength=0.3)
    masked = valid(config, init_image=b64(png()), strength=0.5, mask=b64(png(colour=255,
                                                                            mode="L")))

    def key(r: ValidRequest) -> str:
        return cachekey.image_key(r, model_revision="rev", seed=7, index=0)
    assert len({key(r) for r in (plain, red, blue, weaker, masked)}) == 5
    # Text-to-image keys are unchanged by the feature (no new fields in their params).
    assert key(plain) == key(replace(plain, init=None))
    # Same mode and strength batch together whatever the image; mode and strength split.
    assert jobs.compat_key(red) == jobs.compat_key(blue)
    assert len({jobs.compat_key(r) for r in (plain, red, weaker, masked)}) == 4
    assert [j.mode for j in jobs.image_jobs(masked, [1, 2])] == ["inpaint", "inpaint"]
