"""Per-request LoRA choice and long prompts: validation, batch key, cache key (pure parts)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from imagegen_api.messages import GenerationResult, Heartbeat
from imagegen_api.specs import LoraAdapter
from imagegen_api.workerconfig import ModelEntry, WorkerConfig
from imagegen_worker import cachekey, heartbeat, jobs, longprompt, validate
from imagegen_worker.stats import Snapshot
from imagegen_worker.validate import Rejection, ValidRequest

from .conftest import make_config

NOW = 1_700_000_000.0
DECLARED = [LoraAdapter(name="style", source="file:///loras/style.safetensors", weight=0.8),
            LoraAdapter(name="ink", source="file:///loras/ink.safetensors", weight=0.0)]


def lora_config() -> WorkerConfig:
    base = make_config()
    spec = base.models[0].spec.model_copy(update={"loras": DECLARED})
    return make_config(models=[ModelEntry(name="tiny", spec=spec), base.models[1]])


def run(body: dict[str, Any], *, config: WorkerConfig | None = None,
        window: int | None = None) -> validate.Outcome:
    return validate.validate(
        json.dumps({"request_id": "r-1", "prompt": "a red fox", **body}).encode(), key=b"r-1",
        tier="fast", config=config or lora_config(),
        count_tokens=lambda _m, text: len(text.split()), now=NOW, fallback_id="f",
        prompt_window=None if window is None else (lambda _m: window))


def ok(outcome: validate.Outcome) -> ValidRequest:
    assert isinstance(outcome, ValidRequest), outcome
    return outcome


def test_without_loras_the_declared_defaults_apply() -> None:
    assert ok(run({})).loras == (("style", 0.8),)  # ink's declared weight is 0: inactive


def test_chosen_loras_are_canonical() -> None:
    got = ok(run({"loras": [{"name": "style", "weight": 0.5}, {"name": "ink"}]}))
    assert got.loras == (("ink", 1.0), ("style", 0.5))
    assert ok(run({"loras": []})).loras == ()
    assert ok(run({"loras": [{"name": "style", "weight": 0}]})).loras == ()  # weight 0 = none


def test_a_model_without_adapters_resolves_to_none() -> None:
    assert ok(run({"model": "other"})).loras == ()


@pytest.mark.parametrize(("loras", "field", "limit"), [
    ([{"name": "style"}, {"name": "oil"}], "loras[1].name", "one of: style, ink"),
    ([{"name": "style"}, {"name": "style"}], "loras[1].name", "each adapter once"),
    ([{"name": "ink", "weight": 2.5}], "loras[0].weight", "-2..2"),
    ([{"name": "ink", "weight": -3}], "loras[0].weight", "-2..2"),
])
def test_bad_choices_are_rejected_naming_the_field(loras: list[dict[str, Any]], field: str,
                                                   limit: str) -> None:
    got = run({"loras": loras})
    assert isinstance(got, Rejection) and got.status == "rejected"
    assert got.error.code == "invalid_field"
    assert got.error.field == field and got.error.limit == limit
    assert field in got.error.message


def test_an_adapter_on_a_model_that_declares_none_is_rejected() -> None:
    got = run({"model": "other", "loras": [{"name": "style"}]})
    assert isinstance(got, Rejection) and got.error.field == "loras[0].name"
    assert got.error.limit == "one of: (the model declares none)"


def test_adapter_sets_split_batches_and_cache_keys() -> None:
    plain, styled, half = (ok(run({"seed": 1, "loras": x})) for x in
                           ([], [{"name": "style"}], [{"name": "style", "weight": 0.5}]))
    keys = {jobs.compat_key(r) for r in (plain, styled, half)}
    assert len(keys) == 3
    assert jobs.image_jobs(styled, [1])[0].loras == (("style", 1.0),)
    cache = {cachekey.image_key(r, model_revision="rev", seed=1, index=0)
             for r in (plain, styled, half)}
    assert len(cache) == 3
    # No adapters: the key is the one a request had before adapters could be chosen.
    legacy = dataclasses.replace(plain, loras=())
    assert cachekey.image_key(legacy, model_revision="rev", seed=1, index=0) in cache


def test_long_prompts_are_served_with_a_warning() -> None:
    got = ok(run({"prompt": "cat " * 9, "negative_prompt": "dog " * 8}, window=5))
    assert got.warnings == (
        "prompt is 9 tokens long; the text encoder reads the first 5, the last 4 were ignored",
        "negative_prompt is 8 tokens long; the text encoder reads the first 5, "
        "the last 3 were ignored")
    assert ok(run({"prompt": "cat " * 5}, window=5)).warnings == ()


def test_the_configured_token_limit_still_rejects() -> None:
    got = run({"prompt": "cat " * 11}, window=5)  # the fixture's maxPromptTokens is 10
    assert isinstance(got, Rejection) and got.error.field == "prompt"
    assert got.error.limit == "maxPromptTokens=10"


def test_truncation_warning_only_past_the_window() -> None:
    assert longprompt.truncation_warning("prompt", 77, 77) is None
    assert "first 77" in (longprompt.truncation_warning("prompt", 78, 77) or "")


def test_results_carry_warnings_and_heartbeats_adapters() -> None:
    result = GenerationResult(request_id="r", status="succeeded", warnings=["cut"])
    assert GenerationResult.from_bytes(result.to_bytes()).warnings == ["cut"]
    beat = heartbeat.build(worker="w", role="warm", state="ready", ready=True, models=["tiny"],
                           model_revision="r", snapshot=Snapshot(0, 0, 0, 0, 0.0, None),
                           interval_seconds=5, now=1.0, started_at=0.0, loras=["tiny/style"])
    assert Heartbeat.from_bytes(beat.to_bytes()).loras == ["tiny/style"]
