"""Validation: every rejection class names its field and limit; accepted requests are complete."""

from __future__ import annotations

import json
from typing import Any

import pytest
from imagegen_worker import validate
from imagegen_worker.validate import Rejection, ValidRequest

NOW = 1_700_000_000.0


def run(config: Any, body: Any, *, key: bytes | None = b"k-1", tier: str = "fast",
        raw: bytes | None = None) -> validate.Outcome:
    value = raw if raw is not None else json.dumps(body).encode()
    return validate.validate(
        value, key=key, tier=tier, config=config,
        count_tokens=lambda _m, text: len(text.split()), now=NOW, fallback_id="invalid:t:0:7",
    )


def req(**kw: Any) -> dict[str, Any]:
    return {"request_id": "r-1", "prompt": "a red fox", **kw}


# (case, body, status, code, field, limit fragment)
REJECTIONS: list[tuple[str, dict[str, Any], str, str, str | None, str]] = [
    ("missing request_id", {"prompt": "x"}, "rejected", "missing_field", "request_id",
     "required"),
    ("missing prompt", {"request_id": "r-1"}, "rejected", "missing_field", "prompt", "required"),
    ("blank prompt", req(prompt="   "), "rejected", "missing_field", "prompt", "required"),
    ("wrong type", req(width="wide"), "rejected", "invalid_field", "width", "int"),
    ("unknown model", req(model="sd99"), "rejected", "unknown_model", "model", "tiny, other"),
    ("unknown tier", req(tier="ultra"), "rejected", "unknown_tier", "tier", "turbo, fast, relax"),
    ("width not multiple of 8", req(width=100), "rejected", "invalid_field", "width",
     "multiple of 8"),
    ("height not multiple of 8", req(height=65), "rejected", "invalid_field", "height",
     "multiple of 8"),
    ("width below 64", req(width=32), "rejected", "invalid_field", "width", ">= 64"),
    ("height below 64", req(height=56), "rejected", "invalid_field", "height", ">= 64"),
    ("too many pixels", req(width=256, height=128), "rejected", "limit_exceeded",
     "width,height", "maxPixels=16384"),
    ("too many steps", req(steps=9), "rejected", "limit_exceeded", "steps", "maxSteps=8"),
    ("zero steps", req(steps=0), "rejected", "invalid_field", "steps", ">= 1"),
    ("too many images", req(num_images=3), "rejected", "limit_exceeded", "num_images",
     "maxImagesPerRequest=2"),
    ("zero images", req(num_images=0), "rejected", "invalid_field", "num_images", ">= 1"),
    ("prompt too long", req(prompt="w " * 11), "rejected", "limit_exceeded", "prompt",
     "maxPromptTokens=10"),
    ("negative prompt too long", req(negative_prompt="n " * 11), "rejected", "limit_exceeded",
     "negative_prompt", "maxPromptTokens=10"),
    ("unknown sampler", req(sampler="heun"), "rejected", "invalid_field", "sampler",
     "euler, euler_a"),
    ("bad output format", req(output_format="gif"), "rejected", "invalid_field",
     "output_format", "png, webp"),
    ("quality above range", req(output_format="jpeg", quality=101), "rejected", "invalid_field",
     "quality", "1..100"),
    ("quality below range", req(output_format="webp", quality=0), "rejected", "invalid_field",
     "quality", "1..100"),
    ("guidance above range", req(guidance=51), "rejected", "invalid_field", "guidance",
     "0..50"),
    ("guidance below range", req(guidance=-0.5), "rejected", "invalid_field", "guidance",
     "0..50"),
    ("negative seed", req(seed=-1), "rejected", "invalid_field", "seed", "0..2^63-1"),
    ("deadline passed", req(deadline=NOW - 5), "expired", "deadline_exceeded", "deadline",
     "in the future"),
    ("blocklisted word", req(prompt="a BADWORD here"), "blocked", "blocked", "prompt",
     "safety.blocklist"),
    ("blocklisted phrase", req(prompt="the Forbidden   Thing, painted"), "blocked", "blocked",
     "prompt", "safety.blocklist"),
]


@pytest.mark.parametrize(("case", "body", "status", "code", "field", "limit"), REJECTIONS,
                         ids=[r[0] for r in REJECTIONS])
def test_every_rejection_names_field_and_limit(
    config: Any, case: str, body: dict[str, Any], status: str, code: str, field: str | None,
    limit: str,
) -> None:
    out = run(config, body)
    assert isinstance(out, Rejection), case
    assert out.status == status
    assert out.error.code == code
    assert out.error.field == field
    assert out.error.limit is not None and limit in out.error.limit
    assert out.error.message
    assert out.tier == "fast"
    expected_id = body.get("request_id", "k-1")
    assert out.request_id == expected_id


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
])
def test_unreadable_bodies_are_rejected_under_the_message_key(
    config: Any, raw: bytes, fragment: str
) -> None:
    out = run(config, None, raw=raw)
    assert isinstance(out, Rejection)
    assert (out.status, out.error.code, out.error.limit) == ("rejected", "invalid_json",
                                                             "a JSON object")
    assert fragment in out.error.message
    assert out.request_id == "k-1"


def test_without_key_or_body_id_the_fallback_names_the_message(config: Any) -> None:
    out = run(config, None, raw=b"nope", key=None)
    assert isinstance(out, Rejection)
    assert out.request_id == "invalid:t:0:7"


def test_empty_value_is_rejected(config: Any) -> None:
    out = validate.validate(None, key=b"k", tier="fast", config=config,
                            count_tokens=lambda _m, _t: 1, now=NOW, fallback_id="f")
    assert isinstance(out, Rejection) and out.error.code == "invalid_json"


def test_model_defaults_are_applied(config: Any) -> None:
    out = run(config, req(model="other"), tier="relax")
    assert out == ValidRequest(
        request_id="r-1", model="other", prompt="a red fox", negative_prompt="blurry",
        width=128, height=128, steps=2, guidance=1.0, sampler="lcm", seed=None, num_images=1,
        output_format="png", tier="relax", submitted_at=None, deadline=None, webhook=None,
    )


def test_pool_default_model_and_explicit_values(config: Any) -> None:
    out = run(config, req(width=128, height=64, steps=8, guidance=0, sampler="dpmpp_2m",
                          seed=42, num_images=2, output_format="WEBP", negative_prompt="",
                          deadline=NOW + 60, submitted_at=NOW - 1, tier="fast"))
    assert isinstance(out, ValidRequest)
    assert (out.model, out.width, out.height, out.steps, out.guidance, out.sampler) == (
        "tiny", 128, 64, 8, 0.0, "dpmpp_2m")
    assert (out.seed, out.num_images, out.output_format, out.negative_prompt) == (
        42, 2, "webp", "")
    assert out.deadline == NOW + 60 and out.submitted_at == NOW - 1


def test_topic_decides_the_tier_when_the_request_names_a_known_one(config: Any) -> None:
    out = run(config, req(tier="turbo"), tier="relax")
    assert isinstance(out, ValidRequest) and out.tier == "relax"


@pytest.mark.parametrize("prompt", ["badwordy", "concatenate badword_x", "a bad word"])
def test_blocklist_matches_whole_words_only(config: Any, prompt: str) -> None:
    assert isinstance(run(config, req(prompt=prompt)), ValidRequest)


def test_blocklist_ignored_when_safety_disabled(config_factory: Any) -> None:
    from imagegen_api.specs import SafetySpec

    cfg = config_factory(safety=SafetySpec(enabled=False, blocklist=["badword"]))
    assert isinstance(run(cfg, req(prompt="badword")), ValidRequest)


def test_negative_prompt_is_blocklisted(config: Any) -> None:
    out = run(config, req(negative_prompt="blurry, the FORBIDDEN thing"))
    assert isinstance(out, Rejection) and out.status == "blocked"
    assert out.error.field == "negative_prompt" and out.error.limit == "safety.blocklist"
    assert isinstance(run(config, req(negative_prompt="blurry, badwordy")), ValidRequest)


def test_default_negative_prompt_is_not_blocklisted(config_factory: Any) -> None:
    from imagegen_api.specs import SafetySpec

    cfg = config_factory(safety=SafetySpec(blocklist=["blurry"]))  # model other's default
    out = run(cfg, req(model="other", steps=2, width=128, height=128))
    assert isinstance(out, ValidRequest) and out.negative_prompt == "blurry"
    out = run(cfg, req(model="other", steps=2, negative_prompt="so blurry"))
    assert isinstance(out, Rejection) and out.error.field == "negative_prompt"


def test_limits_are_inclusive(config: Any) -> None:
    out = run(config, req(width=128, height=128, steps=8, num_images=2, prompt="w " * 10,
                          guidance=50, seed=2**63 - 1))
    assert isinstance(out, ValidRequest)


# --- request ids and sizes (issue 17: poison ids, huge prompts) ----------------------------------


@pytest.mark.parametrize(("case", "raw"), [
    ("lone surrogate", b'{"request_id": "\\ud800", "prompt": "x"}'),
    ("space", b'{"request_id": "a b", "prompt": "x"}'),
    ("slash", b'{"request_id": "a/b", "prompt": "x"}'),
    ("too long", json.dumps({"request_id": "r" * 129, "prompt": "x"}).encode()),
    ("not a string", b'{"request_id": 7, "prompt": "x"}'),
])
def test_a_bad_request_id_is_rejected_under_an_encodable_id(
    config: Any, case: str, raw: bytes
) -> None:
    for key in (b"k-1", "\udc80".encode("utf-8", "surrogatepass"), None):
        out = run(config, None, raw=raw, key=key)
        assert isinstance(out, Rejection), case
        assert (out.error.code, out.error.field) == ("invalid_field", "request_id"), out
        assert out.error.limit == r"^[A-Za-z0-9._:-]{1,128}$"
        assert out.request_id in ("k-1", "invalid:t:0:7")
        assert out.request_id == ("k-1" if key == b"k-1" else "invalid:t:0:7")
        out.request_id.encode()  # what broke every serialisation before
        out.error.message.encode()


def test_request_ids_of_the_allowed_alphabet_pass(config: Any) -> None:
    for rid in ("r", "req-0123abcd", "a.b_c:d-E", "x" * 128):
        out = run(config, req(request_id=rid))
        assert isinstance(out, ValidRequest) and out.request_id == rid


def test_a_message_over_the_size_limit_is_refused_before_parsing(config: Any) -> None:
    raw = b'{"request_id": "r-1", "prompt": "' + b"x" * validate.MAX_REQUEST_BYTES + b'"}'
    out = run(config, None, raw=raw)
    assert isinstance(out, Rejection)
    assert (out.error.code, out.error.field) == ("limit_exceeded", None)
    assert out.error.limit == f"{validate.MAX_REQUEST_BYTES} bytes"
    assert out.request_id == "k-1"


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_huge_prompt_is_refused_by_bytes_without_tokenising(config: Any, field: str) -> None:
    tokenised: list[int] = []

    def count(_model: str, text: str) -> int:
        tokenised.append(len(text))
        return len(text.split())

    body = req(**{field: "x" * 900_000})
    out = validate.validate(json.dumps(body).encode(), key=b"k-1", tier="fast", config=config,
                            count_tokens=count, now=NOW, fallback_id="f")
    assert isinstance(out, Rejection)
    assert (out.error.code, out.error.field) == ("limit_exceeded", field)
    assert out.error.limit == "maxPromptTokens=10"
    assert "900000 bytes" in out.error.message
    assert max(tokenised, default=0) < 1000  # the huge text never reached the tokenizer


def test_rejection_messages_are_bounded(config: Any) -> None:
    out = run(config, req(model="m" * 100_000))
    assert isinstance(out, Rejection) and out.error.code == "unknown_model"
    assert len(out.error.message) <= validate.MAX_ERROR_MESSAGE


def test_output_format_quality_and_watermark_resolve(config_factory: Any) -> None:
    from imagegen_api.specs import OutputSpec

    out = run(config_factory(), req(output_format="JPG"))
    assert isinstance(out, ValidRequest)
    assert (out.output_format, out.quality, out.watermark) == ("jpeg", 90, True)
    cfg = config_factory(output=OutputSpec(watermark=False, quality=70))
    out = run(cfg, req(output_format="webp"))
    assert isinstance(out, ValidRequest)
    assert (out.quality, out.watermark) == (70, False)
    out = run(cfg, req(output_format="webp", quality=100))
    assert isinstance(out, ValidRequest) and out.quality == 100
