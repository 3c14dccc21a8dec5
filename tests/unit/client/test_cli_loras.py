"""`imagegen submit --lora NAME[=WEIGHT]` (repeatable) → the request's `loras`."""

from __future__ import annotations

import argparse

import pytest
from imagegen_api.messages import LoraChoice
from imagegen_client import cli

from .test_cli import ns


def test_lora_flags_become_the_requests_loras() -> None:
    [req] = cli.build_requests(ns(prompts=["a fox"], lora=[cli._lora("style"),
                                                           cli._lora("ink=-0.5")]))
    assert req.loras == [LoraChoice(name="style", weight=1.0),
                         LoraChoice(name="ink", weight=-0.5)]
    [plain] = cli.build_requests(ns(prompts=["a fox"]))
    assert plain.loras is None  # the model's declared adapters


@pytest.mark.parametrize("text", ["style=3", "=1", "style=heavy"])
def test_bad_lora_flags_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="--lora"):
        cli._lora(text)
