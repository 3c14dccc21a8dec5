"""Validation against the model's pipeline family: samplers, side multiple, negative prompt.

Fakes: the conftest pool config, with an SD3 and a Flux model added (tiny builtins; no torch
here). Asserts each family-specific rejection names the field, the value and the allowed values.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from imagegen_api.specs import ImageModelSpec
from imagegen_api.workerconfig import ModelEntry, WorkerConfig
from imagegen_worker import validate
from imagegen_worker.validate import Rejection, ValidRequest

from .conftest import make_config


@pytest.fixture
def config() -> WorkerConfig:
    base = make_config()
    flows = [
        ModelEntry(name="sd3", spec=ImageModelSpec(
            source="builtin://tiny-sd3", pipeline="sd3",
            defaults={"width": 64, "height": 64, "steps": 2, "sampler": "heun"})),
        ModelEntry(name="flux", spec=ImageModelSpec(
            source="builtin://tiny-flux", pipeline="flux",
            defaults={"width": 64, "height": 64, "steps": 2, "guidance": 3.5})),
    ]
    return make_config(models=[*base.models, *flows])


def run(config: WorkerConfig, **body: Any) -> validate.Outcome:
    value = json.dumps({"request_id": "r-1", "prompt": "a red fox", **body}).encode()
    return validate.validate(value, key=b"r-1", tier="fast", config=config,
                             count_tokens=lambda _m, text: len(text.split()), now=0.0,
                             fallback_id="f")


@pytest.mark.parametrize(("model", "body", "field", "limit", "message"), [
    ("sd3", {"sampler": "ddim"}, "sampler", "one of: euler, heun",
     "sampler 'ddim' cannot be used by model sd3 (pipeline sd3)"),
    ("flux", {"sampler": "heun"}, "sampler", "one of: euler",
     "sampler 'heun' cannot be used by model flux (pipeline flux)"),
    ("flux", {"sampler": "euler_a"}, "sampler", "one of: euler", "pipeline flux"),
    ("tiny", {"sampler": "heun"}, "sampler", "one of: euler, euler_a, ddim, dpmpp_2m, lcm",
     "pipeline sdxl"),
    ("sd3", {"width": 72}, "width", "multiple of 16", "width 72 is not a multiple of 16"),
    ("flux", {"height": 88}, "height", "multiple of 16", "height 88 is not a multiple of 16"),
    ("flux", {"negative_prompt": "blurry"}, "negative_prompt", "empty",
     "reads no negative prompt"),
])
def test_family_rejections_name_field_value_and_allowed(
    config: WorkerConfig, model: str, body: dict[str, Any], field: str, limit: str,
    message: str,
) -> None:
    out = run(config, model=model, **body)
    assert isinstance(out, Rejection)
    assert (out.status, out.error.code, out.error.field) == ("rejected", "invalid_field", field)
    assert out.error.limit == limit
    assert message in out.error.message
    assert out.model == model


@pytest.mark.parametrize(("model", "body", "sampler"), [
    ("sd3", {}, "heun"), ("sd3", {"sampler": "euler", "width": 96}, "euler"),
    ("flux", {"width": 80, "height": 112}, "euler"), ("tiny", {"width": 72}, "euler"),
])
def test_what_the_family_can_do_is_accepted(config: WorkerConfig, model: str,
                                            body: dict[str, Any], sampler: str) -> None:
    out = run(config, model=model, **body)
    assert isinstance(out, ValidRequest), out
    assert out.sampler == sampler
