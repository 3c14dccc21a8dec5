"""A request's `control` (ControlNet): validation, the control image's size, batch and cache keys
(pure parts; the pixels are test_pipelines_controlnet's)."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace
from typing import Any

import pytest
from imagegen_api.specs import ControlNet, ImageModelSpec
from imagegen_api.workerconfig import ModelEntry, WorkerConfig
from imagegen_worker import cachekey, control, initimage, jobs, validate
from imagegen_worker.validate import Rejection, ValidRequest
from PIL import Image
from pydantic import ValidationError

from .conftest import NS, POOL, make_config

NOW = 1_700_000_000.0
DECLARED = [ControlNet(name="edges", source="builtin://tiny-controlnet-sdxl"),
            ControlNet(name="depth", source="s3://weights/depth", default_scale=0.6)]


def control_config() -> WorkerConfig:
    base = make_config()
    spec = base.models[0].spec.model_copy(update={"controlnets": DECLARED})
    flux = ImageModelSpec(source="builtin://tiny-flux", pipeline="flux", dtype="float32",
                          defaults={"width": 64, "height": 64, "steps": 2})
    return make_config(models=[ModelEntry(name="tiny", spec=spec), base.models[1],
                               ModelEntry(name="flux", spec=flux)])


def png(w: int = 64, h: int = 64, colour: tuple[int, int, int] = (0, 0, 0)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def run(body: dict[str, Any]) -> validate.Outcome:
    return validate.validate(
        json.dumps({"request_id": "r-1", "prompt": "a red fox", "seed": 7, **body}).encode(),
        key=b"r-1", tier="fast", config=control_config(),
        count_tokens=lambda _m, text: len(text.split()), now=NOW, fallback_id="f")


def rejected(out: validate.Outcome, field: str, limit: str) -> Rejection:
    assert isinstance(out, Rejection) and out.status == "rejected", out
    assert out.error.field == field and out.error.limit == limit, out.error
    return out


def valid(body: dict[str, Any]) -> ValidRequest:
    out = run(body)
    assert isinstance(out, ValidRequest), out
    if out.control is None:
        return out
    image = control.resolve(out.control, width=out.width, height=out.height,
                            max_pixels=128 * 128, fetch=lambda _k, _n: None)
    return replace(out, control_image=image)


def test_declared_controlnet_with_default_and_given_scale() -> None:
    got = valid({"control": {"name": "depth", "image": {"b64": png()}}})
    assert got.control is not None
    assert (got.control.name, got.control.scale, got.control.source) == (
        "depth", 0.6, "s3://weights/depth")
    assert valid({"control": {"name": "edges", "image": {"b64": png()},
                              "scale": 1.5}}).control.scale == 1.5  # type: ignore[union-attr]


@pytest.mark.parametrize(("body", "field", "limit"), [
    ({"control": {"name": "pose", "image": {"b64": "x"}}}, "control.name",
     "one of: edges, depth"),
    ({"model": "other", "control": {"name": "edges", "image": {"b64": "x"}}}, "control.name",
     "one of: (the model declares none)"),
    ({"model": "flux", "control": {"name": "edges", "image": {"b64": "x"}}}, "control",
     "pipelines: sdxl, sd15"),
    ({"control": {"name": "edges", "image": {"b64": "x"}, "scale": 2.5}}, "control.scale",
     "0..2"),
    ({"control": {"name": "edges", "image": {"b64": "x"}, "scale": -0.1}}, "control.scale",
     "0..2"),
    ({"control": {"name": "edges", "image": {}}}, "control.image", "one of s3_key, b64"),
    ({"control": {"name": "edges", "image": {"s3_key": "other/pool/x.png"}}},
     "control.image.s3_key", f"below {NS}/{POOL}/"),
    ({"control": {"name": "edges", "image": {"b64": "x"}}, "init_image": {"b64": "x"}},
     "control", "without init_image"),
])
def test_bad_control_is_rejected_naming_the_field(body: dict[str, Any], field: str,
                                                  limit: str) -> None:
    out = rejected(run(body), field, limit)
    assert field.split(".")[0] in out.error.message


def test_missing_control_image_is_named() -> None:
    out = run({"control": {"name": "edges"}})
    assert isinstance(out, Rejection) and out.error.field == "control.image"
    assert out.error.code == "missing_field"


def test_a_control_image_of_the_wrong_size_names_the_expected_size() -> None:
    out = run({"control": {"name": "edges", "image": {"b64": png(96, 64)}}})
    assert isinstance(out, ValidRequest) and out.control is not None
    with pytest.raises(initimage.InputError) as err:
        control.resolve(out.control, width=out.width, height=out.height,
                        max_pixels=128 * 128, fetch=lambda _k, _n: None)
    assert err.value.field == "control.image" and err.value.limit == "64x64"
    assert "96x64" in str(err.value)


def test_batch_and_cache_keys_follow_name_scale_and_image() -> None:
    plain = valid({})
    black = valid({"control": {"name": "edges", "image": {"b64": png()}}})
    black2 = valid({"control": {"name": "edges", "image": {"b64": png()}}})
    white = valid({"control": {"name": "edges", "image": {"b64": png(colour=(255,) * 3)}}})
    half = valid({"control": {"name": "edges", "image": {"b64": png()}, "scale": 0.5}})
    depth = valid({"control": {"name": "depth", "image": {"b64": png()}, "scale": 1.0}})
    variants = (plain, black, white, half, depth)

    def key(r: ValidRequest) -> str:
        return cachekey.image_key(r, model_revision="rev", seed=7, index=0)
    assert len({key(r) for r in variants}) == 5
    assert len({jobs.compat_key(r) for r in variants}) == 5
    assert key(black) == key(black2) and jobs.compat_key(black) == jobs.compat_key(black2)
    # Text-to-image keys are unchanged by the feature (no new fields in their params).
    assert key(plain) == key(replace(plain, control=None))
    [job] = jobs.image_jobs(black, [7])
    assert job.mode == "controlnet" and job.control is not None
    assert job.control[:2] == ("edges", 1.0) and job.control_image.size == (64, 64)


def test_unresolved_control_image_is_a_bug_not_a_silent_plain_image() -> None:
    out = run({"control": {"name": "edges", "image": {"b64": png()}}})
    assert isinstance(out, ValidRequest)
    with pytest.raises(ValueError, match="control image not resolved"):
        jobs.image_jobs(out, [1])


# --- the ImageModel spec (the CRD's CEL twins are checked by the CRD tests) --------------------

def test_spec_refuses_controlnets_on_families_without_them() -> None:
    with pytest.raises(ValidationError, match="controlnets are served for pipeline sdxl, sd15"):
        ImageModelSpec(source="builtin://tiny-flux", pipeline="flux",
                       defaults={"width": 64, "height": 64},
                       controlnets=[{"name": "e", "source": "s3://weights/e"}])
    with pytest.raises(ValidationError, match="tiny-controlnet-sdxl fits an SDXL model"):
        ImageModelSpec(source="s3://weights/sd15", pipeline="sd15",
                       controlnets=[{"name": "e", "source": "builtin://tiny-controlnet-sdxl"}])
    with pytest.raises(ValidationError, match=r"default_scale|defaultScale"):
        ControlNet(name="e", source="s3://weights/e", default_scale=3)
    with pytest.raises(ValidationError, match="source"):
        ControlNet(name="e", source="builtin://tiny-sdxl")  # a model, not a ControlNet
