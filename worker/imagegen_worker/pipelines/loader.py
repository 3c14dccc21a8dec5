"""Turn resolved weights into a diffusers pipeline on a device: class, dtype, variant, LoRAs.

Called by `ModelRunner.load` after `sources.resolve`. The ImageModel's `pipeline` family picks
the class; `auto` (and families without a dedicated entry) lets diffusers read model_index.json.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoPipelineForText2Image,
    DiffusionPipeline,
    FluxPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.utils import logging as diffusers_logging
from imagegen_api.specs import LoraAdapter
from transformers.utils import logging as transformers_logging

from . import samplers, sources

log = logging.getLogger(__name__)

FAMILY_CLASSES: dict[str, Any] = {
    "sdxl": StableDiffusionXLPipeline,
    "sd15": StableDiffusionPipeline,
    "sd3": StableDiffusion3Pipeline,
    "flux": FluxPipeline,
}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
VARIANTS = {"float16": "fp16", "bfloat16": "fp16"}  # hub repos publish half weights as fp16


class ModelLoadError(RuntimeError):
    """The model cannot be served as its ImageModel describes (the message says why)."""


def resolve_device(device: str | None) -> str:
    """`device`, else cuda when a GPU is visible, else cpu."""
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """The spec's dtype; half precision on a CPU falls back to float32 (logged)."""
    dtype = DTYPES[name]
    if dtype != torch.float32 and not device.startswith("cuda"):
        log.warning("dtype %s is not used on %s: falling back to float32", name, device)
        return torch.float32
    return dtype


def variant_for(path: Path, dtype_name: str) -> str | None:
    """The weight variant to load: `fp16` for half dtypes when the folder has such files."""
    variant = VARIANTS.get(dtype_name)
    if variant and path.is_dir() and any(path.glob(f"*/*.{variant}.*")):
        return variant
    return None


def load_pipeline(path: Path, family: str, dtype: torch.dtype, *, variant: str | None = None
                  ) -> Any:
    """A pipeline from a diffusers `save_pretrained` folder (no network access)."""
    diffusers_logging.disable_progress_bar()  # bars are noise in a worker's log
    transformers_logging.disable_progress_bar()
    options: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if variant:
        options["variant"] = variant
    cls = FAMILY_CLASSES.get(family)
    if cls is not None:
        return cls.from_pretrained(path, **options)
    try:
        return AutoPipelineForText2Image.from_pretrained(path, **options)
    except ValueError as err:  # a pipeline class AutoPipeline has no text-to-image entry for
        log.info("AutoPipelineForText2Image cannot load %s (%s): using DiffusionPipeline",
                 path, err)
        return DiffusionPipeline.from_pretrained(path, **options)


def check_family(pipe: Any, family: str) -> None:
    """ModelLoadError when the weights' scheduler is not of the family's kind: a flow-matching
    model (SD3, Flux) declared as a UNet family would get UNet samplers, and the reverse."""
    flow = samplers.is_flow_scheduler(pipe.scheduler)
    if flow != (family in samplers.FLOW_FAMILIES):
        kind = "a flow-matching" if flow else "a UNet-style"
        want = "sd3 or flux" if flow else "sdxl, sd15 or auto"
        raise ModelLoadError(
            f"the weights ship {kind} scheduler ({type(pipe.scheduler).__name__}, "
            f"{type(pipe).__name__}) but the ImageModel declares pipeline {family}: "
            f"set pipeline to {want}")


def peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


def load_loras(
    pipe: Any,
    loras: list[LoraAdapter],
    *,
    cache_dir: str | Path | None = None,
) -> list[str]:
    """Load every adapter under its name and activate them with their weights.

    Returns the adapters' revisions (they are part of the model's revision: they change pixels).
    diffusers needs the `peft` package for this; without it a model with LoRAs fails to load
    with a clear error rather than serving images without its adapters.
    """
    if not loras:
        return []
    if not peft_available():
        raise ModelLoadError(
            "this model declares LoRA adapters but the worker image has no 'peft' package "
            "(diffusers needs it to load LoRAs)"
        )
    if not hasattr(pipe, "load_lora_weights"):
        raise ModelLoadError(f"{type(pipe).__name__} does not support LoRA adapters")
    revisions = []
    for lora in loras:
        weights = sources.resolve(lora.source, cache_dir=cache_dir)
        assert weights.path is not None, "builtin:// is not a LoRA source"
        location, options = _lora_location(weights.path)
        log.info("loading LoRA %s from %s (%s)", lora.name, lora.source, weights.revision)
        pipe.load_lora_weights(location, adapter_name=lora.name, **options)
        revisions.append(f"{lora.name}={weights.revision}x{lora.weight:g}")
    names, weights_ = [lora.name for lora in loras], [lora.weight for lora in loras]
    pipe.set_adapters(names, adapter_weights=weights_)
    return revisions


def _lora_location(path: Path) -> tuple[str, dict[str, str]]:
    """load_lora_weights takes a folder plus the file's name (or a folder with one file)."""
    if path.is_file():
        return str(path.parent), {"weight_name": path.name}
    return str(path), {}
