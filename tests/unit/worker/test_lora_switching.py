"""Adapters switched per batch on one loaded model (LoRAs made in code, as in test_pipelines):
each batch draws with its own adapter set, whatever ran before it, and no set reloads the base."""

from __future__ import annotations

import numpy as np
import pytest
from imagegen_api.specs import LoraAdapter
from imagegen_worker.pipelines import ModelRunner

from .test_pipelines import SPEC, job, make_lora, pixels


@pytest.fixture(scope="module")
def runners(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRunner, ModelRunner]:
    style = make_lora(tmp_path_factory.mktemp("style"), seed=7)
    ink = make_lora(tmp_path_factory.mktemp("ink"), seed=11)
    spec = SPEC.model_copy(update={"loras": [
        LoraAdapter(name="style", source=f"file://{style}", weight=1.0),
        LoraAdapter(name="ink", source=f"file://{ink}", weight=0.5)]})
    return ModelRunner.load("base", SPEC), ModelRunner.load("styled", spec)


def draw(runner: ModelRunner, loras: tuple[tuple[str, float], ...] | None,
         seed: int = 42) -> np.ndarray:
    return pixels(runner.generate([job(seed, loras=loras)])[0])


def test_each_adapter_set_draws_its_own_images(runners: tuple[ModelRunner, ModelRunner]
                                               ) -> None:
    base_runner, styled = runners
    base = draw(base_runner, None)
    alone = {name: draw(styled, (name_w,)) for name, name_w in
             (("style", ("style", 1.0)), ("ink", ("ink", 1.0)))}
    assert not np.array_equal(alone["style"], base)
    assert not np.array_equal(alone["ink"], base)
    assert np.abs(alone["style"].astype(int) - alone["ink"].astype(int)).mean() > 1.0
    # No adapter and weight 0 both draw the base model's pixels exactly.
    assert np.array_equal(draw(styled, ()), base)
    assert np.array_equal(draw(styled, (("style", 0.0),)), base)
    # A burst alternating sets: every batch gets what it gets alone, whatever ran before.
    for name in ("ink", "style", "ink", "style"):
        assert np.array_equal(draw(styled, ((name, 1.0),)), alone[name])
        assert np.array_equal(draw(styled, ()), base)
    both = draw(styled, (("ink", 0.5), ("style", 1.0)))
    assert not np.array_equal(both, alone["style"])
    # None: the declared adapters at their declared weights (style 1.0 + ink 0.5).
    assert np.array_equal(draw(styled, None), both)


def test_a_batch_mixing_adapter_sets_is_refused(runners: tuple[ModelRunner, ModelRunner]
                                                ) -> None:
    _, styled = runners
    with pytest.raises(ValueError, match="batch_key"):
        styled.generate([job(1, loras=(("style", 1.0),)), job(2, loras=())])


def test_adapters_on_a_model_without_any_are_refused(runners: tuple[ModelRunner, ModelRunner]
                                                     ) -> None:
    base_runner, _ = runners
    with pytest.raises(ValueError, match="declares no LoRA"):
        base_runner.generate([job(1, loras=(("style", 1.0),))])


def test_prompt_window_is_the_encoders(runners: tuple[ModelRunner, ModelRunner]) -> None:
    assert runners[0].prompt_window() == 77
