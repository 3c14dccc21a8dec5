"""The CLI's gateway path, pure parts: request → body, error shape → message, view → result."""

from __future__ import annotations

import pytest
from imagegen_api.messages import GenerationRequest, LoraChoice
from imagegen_client.cli import main
from imagegen_client.gateway import error_message, request_body, result_from_view


def test_request_body_maps_every_set_field() -> None:
    req = GenerationRequest(request_id="cli-1", prompt="a cat", negative_prompt="dog",
                            model="tiny", width=64, height=32, steps=2, guidance=5.0,
                            sampler="euler", seed=7, num_images=2, output_format="webp",
                            tier="fast", loras=[LoraChoice(name="style", weight=0.5)])
    assert request_body(req) == {
        "prompt": "a cat", "n": 2, "request_id": "cli-1", "size": "64x32", "model": "tiny",
        "negative_prompt": "dog", "steps": 2, "guidance": 5.0, "sampler": "euler", "seed": 7,
        "tier": "fast", "output_format": "webp", "loras": [{"name": "style", "weight": 0.5}]}


def test_request_body_leaves_unset_fields_to_the_gateway() -> None:
    body = request_body(GenerationRequest(request_id="cli-2", prompt="p"))
    assert "size" not in body and "steps" not in body and "seed" not in body
    assert body["prompt"] == "p" and body["request_id"] == "cli-2"


def test_error_message_names_the_field() -> None:
    payload = {"error": {"message": "steps: must be <= 8 (limit: le=8)", "type":
                         "invalid_request_error", "param": "steps", "code": "invalid_request"}}
    msg = error_message(400, payload)
    assert "HTTP 400" in msg and "[steps]" in msg and "le=8" in msg
    assert "HTTP 502" in error_message(502, "<html>bad gateway</html>")


def test_result_from_view_only_when_terminal() -> None:
    assert result_from_view({"id": "x", "state": "queued", "tier": "fast"}) is None
    r = result_from_view({"id": "x", "state": "succeeded", "tier": "fast", "cache_hit": True,
                          "timings": {"queue_ms": 1.0, "generate_ms": 0.0, "total_ms": 3.0},
                          "images": [{"key": "k.png", "url": "http://s/k.png", "format": "png",
                                      "seed": 7, "sha256": "ab", "width": 64, "height": 64}],
                          "model": "tiny"})
    assert r is not None and r.status == "succeeded" and r.cache_hit and r.images[0].key == "k.png"


def test_pool_or_gateway_is_required() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["submit", "a cat"])
    assert exc.value.code == 2
