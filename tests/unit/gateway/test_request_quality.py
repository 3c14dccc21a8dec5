"""OpenAI's `quality`, `output_format` and `output_compression` on the gateway, and the init
image fields passed through (imagegen_gateway.requests): what each maps onto in the request
message, and 400s in OpenAI's error shape naming the field."""

from __future__ import annotations

import json

import pytest
from imagegen_api.specs import GenerationDefaults, ImageModelSpec, ModelLimits
from imagegen_api.workerconfig import ModelEntry, WorkerConfig
from imagegen_gateway import requests as reqs

from .test_requests import plan, pool, refusal


def pool_steps(default: int, maximum: int) -> WorkerConfig:
    """The test pool with a model whose default and maximum steps are given."""
    spec = ImageModelSpec(
        source="builtin://tiny-sdxl", pipeline="sdxl",
        defaults=GenerationDefaults(width=64, height=64, steps=default, guidance=5.0),
        limits=ModelLimits(max_pixels=128 * 128, max_steps=maximum, max_images_per_request=2))
    return pool().model_copy(update={"models": [ModelEntry(name="tiny", spec=spec)]})


def body(**fields: object) -> bytes:
    return json.dumps({"prompt": "a cat", **fields}).encode()


@pytest.mark.parametrize(("quality", "steps"), [
    ("low", 10), ("medium", None), ("standard", None), ("high", 30), ("hd", 30),
    ("auto", None), (None, None)])
def test_quality_scales_the_models_default_steps(quality: str | None, steps: int | None
                                                 ) -> None:
    fields = {} if quality is None else {"quality": quality}
    assert plan(body(**fields), pool_steps(20, 50)).request.steps == steps


def test_quality_steps_stay_within_the_models_limit_and_at_least_one() -> None:
    assert plan(body(quality="hd"), pool_steps(20, 25)).request.steps == 25
    assert plan(body(quality="low"), pool_steps(1, 4)).request.steps == 1
    assert plan(body(quality="high"), pool_steps(3, 4)).request.steps == 4  # round(4.5)


def test_explicit_steps_win_over_quality() -> None:
    assert plan(body(quality="hd", steps=7), pool_steps(20, 50)).request.steps == 7


@pytest.mark.parametrize(("fmt", "compression", "expected"), [
    ("png", None, ("png", None)), ("webp", None, ("webp", None)),
    ("jpeg", 85, ("jpeg", 85)), ("jpg", 40, ("jpeg", 40)), ("JPEG", 100, ("jpeg", 100)),
    ("webp", 0, ("webp", 1)), (None, None, ("png", None))])
def test_output_format_and_compression_map_to_format_and_quality(
        fmt: str | None, compression: int | None, expected: tuple[str, int | None]) -> None:
    fields: dict[str, object] = {}
    if fmt is not None:
        fields["output_format"] = fmt
    if compression is not None:
        fields["output_compression"] = compression
    r = plan(body(**fields)).request
    assert (r.output_format, r.quality) == expected
    # The message the worker reads carries them (exclude_none drops an unset quality).
    wire = json.loads(r.to_bytes())
    assert wire["output_format"] == expected[0] and wire.get("quality") == expected[1]


@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"quality": "ultra"}, "quality", "low, medium, standard, high, hd, auto"),
    ({"quality": 80}, "quality", "string"),
    ({"output_format": "gif"}, "output_format", "png, webp, jpeg"),
    ({"output_format": "webp", "output_compression": 101}, "output_compression", "le=100"),
    ({"output_format": "jpeg", "output_compression": -1}, "output_compression", "ge=0"),
    ({"output_compression": 50}, "output_compression", "webp or jpeg, not png"),
    ({"output_format": "png", "output_compression": 50}, "output_compression", "not png"),
])
def test_bad_values_are_400s_naming_the_field(fields: dict[str, object], param: str,
                                              words: str) -> None:
    err = refusal(body(**fields))
    assert (err.status, err.param, err.code) == (400, param, "invalid_field")
    assert words in err.message
    shape = err.body()["error"]
    assert set(shape) == {"message", "type", "param", "code"}
    assert shape["type"] == "invalid_request_error" and shape["param"] == param


def test_init_image_mask_and_strength_pass_through_to_the_worker() -> None:
    r = plan(body(init_image={"s3_key": "ns/p/inputs/a.png"}, mask={"b64": "iVBORw0K"},
                  strength=0.6)).request
    assert r.init_image is not None and r.init_image.s3_key == "ns/p/inputs/a.png"
    assert r.mask is not None and r.mask.b64 == "iVBORw0K"
    assert r.strength == 0.6
    # Checked by the worker (decoding, sizes, strength range), answered as a 400 from there.
    assert plan(body(strength=3)).request.strength == 3


def test_with_an_init_image_and_no_size_the_size_is_the_init_images() -> None:
    r = plan(body(init_image={"b64": "iVBORw0K"})).request
    assert (r.width, r.height) == (None, None)  # the worker takes the init image's size
    r = plan(body(init_image={"b64": "iVBORw0K"}, size="64x128")).request
    assert (r.width, r.height) == (64, 128)
    assert refusal(body(init_image={"b64": "iVBORw0K"}, size="256x256")).param == "size"


def test_unknown_init_image_fields_are_refused() -> None:
    err = refusal(body(init_image={"url": "http://x/a.png"}))
    assert (err.status, err.param) == (400, "init_image.url")


def test_quality_table_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    for name in reqs.QUALITY_STEPS:
        assert f"`{name}`" in doc, name
