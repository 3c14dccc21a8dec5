"""Text-to-image generation with diffusers: the worker's pipeline runner.

The consumer loop uses only these names: it turns requests into `ImageJob`s, groups them by
`batch_key`, and serves each group through the `ModelRunner` of the requested model.
`ImageJob` and `batch_key` are plain Python; the other names import torch and diffusers on first
use, so modules that only build jobs stay light.

    jobs.py          ImageJob, batch_key
    runner.py        ModelRunner (load, count_tokens, generate, warmup)
    samplers.py      (family, sampler name) → scheduler class, a fresh scheduler per call
    sources.py       source URI → local weights + revision (s3.py, hf.py for remote sources)
    loader.py        pipeline class per family, family check, dtype, variant, LoRA adapters
    optimize.py      speed levers (channels_last, fuse_qkv, compile, …)
    architecture.py  SDXL-architecture pipelines with random weights (builtin://tiny-sdxl, bench)
                     and the ControlNet built in code (builtin://tiny-controlnet-sdxl)
    controlnet.py    a declared ControlNet → its model and a from_pipe ControlNet pipeline
    flow.py          SD3 and Flux pipelines with random weights (builtin://tiny-sd3, tiny-flux)
    tokenizer.py     an offline CLIP tokenizer for those
    t5tokenizer.py   an offline T5 tokenizer for the flow-matching ones
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .jobs import ImageJob, batch_key

if TYPE_CHECKING:
    from .loader import ModelLoadError
    from .runner import ModelRunner
    from .samplers import SAMPLER_SCHEDULERS

__all__ = ["SAMPLER_SCHEDULERS", "ImageJob", "ModelLoadError", "ModelRunner", "batch_key"]

_LAZY = {"ModelRunner": "runner", "SAMPLER_SCHEDULERS": "samplers", "ModelLoadError": "loader"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
