"""The gateway passes a body's `control` (ControlNet) to the worker: the name checked against the
model's declared ControlNets here, the image and scale left to the worker's validator."""

from __future__ import annotations

import json

import pytest
from imagegen_api.messages import GenerationRequest
from imagegen_api.specs import ControlNet
from imagegen_api.workerconfig import ModelEntry, WorkerConfig
from imagegen_gateway import requests as reqs

from .test_requests import NOW, pool


def controlled_pool() -> WorkerConfig:
    cfg = pool()
    spec = cfg.models[0].spec.model_copy(update={"controlnets": [
        ControlNet(name="edges", source="builtin://tiny-controlnet-sdxl")]})
    return cfg.model_copy(update={"models": [ModelEntry(name="tiny", spec=spec)]})


def plan(body: dict[str, object]) -> GenerationRequest:
    raw = json.dumps({"prompt": "a fox", **body}).encode()
    return reqs.plan(reqs.parse_body(raw), controlled_pool(), request_id="gw-1",
                     now=NOW).request


def test_control_is_passed_through() -> None:
    got = plan({"control": {"name": "edges", "image": {"s3_key": "ns/p/in/edges.png"},
                            "scale": 0.7}})
    assert got.control is not None
    assert (got.control.name, got.control.scale, got.control.image.s3_key) == (
        "edges", 0.7, "ns/p/in/edges.png")
    on_wire = json.loads(got.to_bytes())["control"]
    assert on_wire == {"name": "edges", "image": {"s3_key": "ns/p/in/edges.png"}, "scale": 0.7}
    assert plan({}).control is None


def test_undeclared_controlnet_is_a_400_naming_it() -> None:
    with pytest.raises(reqs.GatewayError) as err:
        plan({"control": {"name": "depth", "image": {"b64": "AAAA"}}})
    assert err.value.status == 400 and err.value.param == "control.name"
    assert "'depth'" in err.value.message and "one of: edges" in err.value.message


def test_unknown_control_fields_are_refused() -> None:
    with pytest.raises(reqs.GatewayError) as err:
        plan({"control": {"name": "edges", "image": {"b64": "AAAA"}, "weight": 1}})
    assert err.value.status == 400 and "control" in (err.value.param or "")
