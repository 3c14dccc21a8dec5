"""ControlNets: a declared `ImageModel.spec.controlnets[]` entry → a ControlNet pipeline that
shares the loaded model's modules.

Called by `ModelRunner` the first time a batch names a ControlNet (then kept): `load` resolves
the source as a model source is resolved (builtin:// is built in code, the rest is a diffusers
`ControlNetModel` folder), and `pipeline` wraps the base pipeline with it by `from_pipe` (the
base's text encoders, UNet and VAE, no second copy of them).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from imagegen_api.specs import ControlNet

from . import controlnet_architecture, loader, sources

log = logging.getLogger(__name__)

BUILTIN_SEED = 20240602  # the builtin ControlNet's weights: same seed, same weights


def load(declared: ControlNet, *, dtype: torch.dtype, device: str,
         cache_dir: str | os.PathLike[str] | None = None) -> tuple[Any, str]:
    """(ControlNetModel on `device`, revision of its weights)."""
    weights = sources.resolve(declared.source, cache_dir=cache_dir)
    if weights.path is None:
        arch = sources.BUILTIN_CONTROLNETS.get(weights.source.location)
        if arch is None:
            raise loader.ModelLoadError(f"controlnet {declared.name}: {declared.source} is a "
                                        "builtin model, not a ControlNet")
        model = controlnet_architecture.build_controlnet(arch, seed=BUILTIN_SEED, dtype=dtype)
    else:
        from diffusers import ControlNetModel

        try:
            model = ControlNetModel.from_pretrained(weights.path, torch_dtype=dtype,
                                                    local_files_only=True)
        except (OSError, ValueError) as err:
            raise loader.ModelLoadError(f"controlnet {declared.name}: {declared.source} holds "
                                        f"no diffusers ControlNetModel: {err}") from err
    return model.to(device), weights.revision


def pipeline(base: Any, family: str, model: Any) -> Any:
    """The family's ControlNet pipeline made from `base` (its modules shared) and `model`."""
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline

    classes = {"sdxl": StableDiffusionXLControlNetPipeline,
               "sd15": StableDiffusionControlNetPipeline}
    cls = classes.get(family)
    if cls is None:  # validation refuses these first (families.FAMILIES[...].controlnet)
        raise loader.ModelLoadError(f"pipeline {family} is not served with a ControlNet")
    pipe = cls.from_pipe(base, controlnet=model)
    pipe.set_progress_bar_config(disable=True)
    return pipe
