"""The gateway's pure request mapping (imagegen_gateway.requests): OpenAI body → request
message, size parsing, limits from the model spec, OpenAI error shapes, result → response."""

from __future__ import annotations

import pytest
from imagegen_api import naming
from imagegen_api.messages import ErrorInfo, GenerationResult, ImageRef
from imagegen_api.specs import DEFAULT_TIER_SPECS, GenerationDefaults, ImageModelSpec, ModelLimits
from imagegen_api.workerconfig import KafkaSettings, ModelEntry, WorkerConfig
from imagegen_gateway import requests as reqs

NOW = 1_800_000_000.0


def pool(tiers: tuple[str, ...] = ("turbo", "fast", "relax")) -> WorkerConfig:
    spec = ImageModelSpec(
        source="builtin://tiny-sdxl", pipeline="sdxl",
        defaults=GenerationDefaults(width=64, height=64, steps=2, guidance=5.0),
        limits=ModelLimits(max_pixels=128 * 128, max_steps=4, max_images_per_request=2),
    )
    specs = [t for t in DEFAULT_TIER_SPECS if t.name in tiers]
    return WorkerConfig(
        namespace="ns", pool="p", models=[ModelEntry(name="tiny", spec=spec)],
        kafka=KafkaSettings(group="g", tier_topics={t.name: naming.tier_topic("ns", "p", t.name)
                                                    for t in specs},
                            results_topic="r", dlq_topic="d", tiers=specs),
    )


def plan(raw: bytes, cfg: WorkerConfig | None = None) -> reqs.Planned:
    return reqs.plan(reqs.parse_body(raw), cfg or pool(), request_id="gw-1", now=NOW)


def refusal(raw: bytes, cfg: WorkerConfig | None = None) -> reqs.GatewayError:
    with pytest.raises(reqs.GatewayError) as err:
        plan(raw, cfg)
    return err.value


# --- mapping ---------------------------------------------------------------------------------


def test_openai_body_maps_to_the_request_message() -> None:
    p = plan(b'{"model": "tiny", "prompt": "a cat", "n": 2, "size": "64x128",'
             b' "response_format": "b64_json", "user": "u1", "steps": 3, "guidance": 4.5,'
             b' "sampler": "ddim", "seed": 9, "tier": "turbo", "negative_prompt": "dogs"}')
    r = p.request
    assert (r.request_id, r.model, r.prompt, r.negative_prompt) == ("gw-1", "tiny", "a cat", "dogs")
    assert (r.width, r.height, r.num_images, r.steps, r.guidance, r.sampler, r.seed) == (
        64, 128, 2, 3, 4.5, "ddim", 9)
    assert (r.tier, p.tier, r.submitted_at, r.output_format) == ("turbo", "turbo", NOW, "png")
    assert p.response_format == "b64_json"


def test_defaults_model_size_and_tier_from_the_pool() -> None:
    p = plan(b'{"prompt": "a cat"}')
    assert (p.request.model, p.request.width, p.request.height, p.tier) == ("tiny", 64, 64, "fast")
    assert p.request.steps is None  # the worker applies the model's default
    assert plan(b'{"prompt": "x"}', pool(("relax",))).tier == "relax"  # no fast tier: the first


def test_client_request_id_is_kept() -> None:
    assert plan(b'{"prompt": "x", "request_id": "mine-1"}').request.request_id == "mine-1"


@pytest.mark.parametrize(("size", "expected"), [("64x64", (64, 64)), ("1024X768", (1024, 768))])
def test_parse_size(size: str, expected: tuple[int, int]) -> None:
    assert reqs.parse_size(size) == expected


@pytest.mark.parametrize("size", ["64", "x64", "64x", "-64x64", "64x64x64", "auto", "6.4x64"])
def test_parse_size_refuses(size: str) -> None:
    with pytest.raises(reqs.GatewayError) as err:
        reqs.parse_size(size)
    assert (err.value.status, err.value.param) == (400, "size")


# --- refusals name the field and the limit ---------------------------------------------------


@pytest.mark.parametrize(("raw", "status", "param", "words"), [
    (b'{"prompt": "x", "size": "256x256"}', 400, "size", "maxPixels"),
    (b'{"prompt": "x", "size": "72x60"}', 400, "size", "multiple of 8"),
    (b'{"prompt": "x", "size": "56x64"}', 400, "size", "at least 64"),
    (b'{"prompt": "x", "n": 3}', 400, "n", "maxImagesPerRequest"),
    (b'{"prompt": "x", "n": 0}', 400, "n", "greater than or equal to 1"),
    (b'{"prompt": "x", "steps": 5}', 400, "steps", "maxSteps"),
    (b'{"prompt": "x", "guidance": 51}', 400, "guidance", "[0, 50]"),
    (b'{"prompt": "x", "sampler": "plms"}', 400, "sampler", "euler"),
    (b'{"prompt": "x", "output_format": "gif"}', 400, "output_format", "png"),
    (b'{"prompt": "x", "tier": "gold"}', 400, "tier", "turbo, fast, relax"),
    (b'{"prompt": "x", "model": "sd3"}', 404, "model", "tiny"),
    (b'{"prompt": "x", "deadline": 1}', 400, "deadline", "past"),
    (b'{"prompt": "x", "response_format": "file"}', 400, "response_format", "url"),
    (b'{"prompt": "x", "request_id": "a b"}', 400, "request_id", "pattern"),
    (b'{"prompt": "x", "colour": "red"}', 400, "colour", "unknown field"),
    (b'{"prompt": ""}', 400, "prompt", "at least 1"),
    (b'{"n": 1}', 400, "prompt", "required"),
    (b'{"prompt": ', 400, None, "JSON"),
    (b'[1, 2]', 400, None, "object"),
])
def test_refusals(raw: bytes, status: int, param: str | None, words: str) -> None:
    err = refusal(raw)
    assert (err.status, err.param) == (status, param)
    assert words in err.message
    body = err.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error"


# --- results → responses ---------------------------------------------------------------------


def result(status: str = "succeeded", **kw: object) -> GenerationResult:
    images = [ImageRef(key=f"k{i}", url=f"http://s3/k{i}", width=64, height=64, seed=i,
                       sha256="0" * 64) for i in range(2)]
    return GenerationResult.model_validate({"request_id": "gw-1", "status": status,
                                            "images": images if status == "succeeded" else [],
                                            "finished_at": NOW, **kw})


def test_images_response_url_and_b64() -> None:
    assert reqs.images_response(result()) == {
        "created": int(NOW), "data": [{"url": "http://s3/k0"}, {"url": "http://s3/k1"}]}
    assert reqs.images_response(result(), ["AA", "BB"])["data"] == [
        {"b64_json": "AA"}, {"b64_json": "BB"}]


def test_result_errors_map_to_http() -> None:
    assert reqs.result_error(result()) is None
    err = ErrorInfo(code="limit_exceeded", message="prompt has 90 tokens", field="prompt",
                    limit="maxPromptTokens=77")
    rejected = reqs.result_error(result("rejected", error=err))
    assert rejected is not None
    assert (rejected.status, rejected.param, rejected.code) == (400, "prompt", "limit_exceeded")
    assert "maxPromptTokens=77" in rejected.message
    blocked = reqs.result_error(result("blocked"))
    assert blocked is not None and blocked.code == "content_policy_violation"
    flagged = ErrorInfo(code="blocked", message="image 1 of 1 (seed 5) was flagged",
                        field="images", limit="safety.checker.threshold=0.3", reason="redness",
                        score=0.47)
    after = reqs.result_error(result("blocked", error=flagged))
    assert after is not None and (after.status, after.param, after.code) == (
        400, "images", "content_policy_violation")
    assert "safety.checker.threshold=0.3" in after.message
    expired = reqs.result_error(result("expired"))
    assert expired is not None and expired.status == 504
    failed = reqs.result_error(result("failed"))
    assert failed is not None and (failed.status, failed.body()["error"]["type"]) == (
        500, "server_error")
