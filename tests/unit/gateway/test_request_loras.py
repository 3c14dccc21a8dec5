"""The gateway passes a body's `loras` through to the request message, checked against the
model's declared adapters (the worker checks the same; the gateway answers 400 before Kafka)."""

from __future__ import annotations

import pytest
from imagegen_api.messages import LoraChoice
from imagegen_api.specs import LoraAdapter
from imagegen_api.workerconfig import ModelEntry, WorkerConfig
from imagegen_gateway import requests as reqs

from .test_requests import NOW, pool


def with_loras() -> WorkerConfig:
    cfg = pool()
    spec = cfg.models[0].spec.model_copy(update={"loras": [
        LoraAdapter(name="style", source="file:///l/style.safetensors")]})
    return cfg.model_copy(update={"models": [ModelEntry(name="tiny", spec=spec)]})


def plan(raw: bytes) -> reqs.Planned:
    return reqs.plan(reqs.parse_body(raw), with_loras(), request_id="gw-1", now=NOW)


def test_loras_pass_through() -> None:
    got = plan(b'{"prompt": "a cat", "loras": [{"name": "style", "weight": 0.5}]}')
    assert got.request.loras == [LoraChoice(name="style", weight=0.5)]
    assert plan(b'{"prompt": "a cat"}').request.loras is None
    assert plan(b'{"prompt": "a cat", "loras": []}').request.loras == []


@pytest.mark.parametrize(("body", "param"), [
    (b'{"prompt": "a", "loras": [{"name": "style"}, {"name": "oil"}]}', "loras[1].name"),
    (b'{"prompt": "a", "loras": [{"name": "style", "weight": 9}]}', "loras[0].weight"),
])
def test_bad_loras_are_refused_naming_the_field(body: bytes, param: str) -> None:
    with pytest.raises(reqs.GatewayError) as err:
        plan(body)
    assert err.value.status == 400 and err.value.param == param
    assert param in err.value.message
