"""Cache keys: every pixel-affecting parameter changes the key; nothing else does."""

from __future__ import annotations

import dataclasses

import pytest
from imagegen_worker import cachekey
from imagegen_worker.validate import ValidRequest

BASE = ValidRequest(
    request_id="r1", model="tiny", prompt="a fox", negative_prompt="", width=64, height=64,
    steps=4, guidance=5.0, sampler="euler", seed=7, num_images=2, output_format="png",
    tier="fast", submitted_at=None, deadline=None, webhook=None,
)


def key(req: ValidRequest = BASE, *, revision: str = "rev1", seed: int = 7, index: int = 0) -> str:
    return cachekey.image_key(req, model_revision=revision, seed=seed, index=index)


@pytest.mark.parametrize(("field", "value"), [
    ("model", "other"), ("prompt", "a fox "), ("negative_prompt", "blur"), ("width", 72),
    ("height", 72), ("steps", 5), ("guidance", 5.5), ("sampler", "ddim"),
    ("output_format", "webp"),
])
def test_each_pixel_parameter_changes_the_key(field: str, value: object) -> None:
    assert key(dataclasses.replace(BASE, **{field: value})) != key()


def test_revision_seed_and_index_change_the_key() -> None:
    assert key(revision="rev2") != key()
    assert key(seed=8) != key()
    assert key(index=1) != key()


@pytest.mark.parametrize(("field", "value"), [
    ("request_id", "other"), ("tier", "relax"), ("submitted_at", 5.0), ("deadline", 9.0),
    ("webhook", "http://x"),
])
def test_delivery_fields_do_not_change_the_key(field: str, value: object) -> None:
    assert key(dataclasses.replace(BASE, **{field: value})) == key()


def test_key_is_stable_hex_sha256() -> None:
    k = key()
    assert k == key() and len(k) == 64 and int(k, 16) >= 0


def test_request_keys_use_consecutive_seeds() -> None:
    keys = cachekey.request_keys(BASE, model_revision="rev1")
    assert keys == [key(seed=7, index=0), key(seed=8, index=1)]


def test_unseeded_requests_are_not_cached() -> None:
    assert cachekey.request_keys(dataclasses.replace(BASE, seed=None), model_revision="r") is None


def test_guidance_int_and_float_agree() -> None:
    assert key(dataclasses.replace(BASE, guidance=5)) == key()


def test_quality_changes_lossy_keys_only_and_watermark_off_changes_the_key() -> None:
    webp = dataclasses.replace(BASE, output_format="webp")
    assert key(dataclasses.replace(webp, quality=50)) != key(webp)
    assert key(dataclasses.replace(BASE, quality=50)) == key()  # png is lossless
    assert key(dataclasses.replace(BASE, watermark=False)) != key()
