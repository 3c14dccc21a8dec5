"""The built-in ControlNet's shape and its weights made in code (builtin://tiny-controlnet-sdxl).

Kept apart from architecture.py on purpose: that file is hashed into the trained shapes model's
version (builtin.shapes_version), so a change here must not force every machine to retrain it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from .architecture import TINY, SdxlArchitecture


@dataclass(frozen=True)
class ControlNetArchitecture:
    """A ControlNet built in code for the UNet of `base`: `ControlNetModel.from_unet` of that
    UNet's shape, its zero convolutions drawn at random so that it changes pixels (a real
    ControlNet starts at zero and learns them; zeros would leave every image as it was)."""

    name: str
    revision: str
    base: SdxlArchitecture
    # The control image's encoder: four stages, 8x down to the latents (SDXL's is 16..256).
    conditioning_channels: tuple[int, ...] = (8, 16, 32, 32)
    zero_conv_std: float = 0.5  # large enough to move a tiny model's pixels visibly
    # Output scale of the control image's encoder. diffusers' default init shrinks the signal
    # at every layer, and group norms then wash it out: the image would hardly matter. He init
    # inside and this gain at the end make the control image move pixels by a few levels.
    embedding_gain: float = 8.0


TINY_CONTROLNET = ControlNetArchitecture(
    name="tiny-controlnet-sdxl", revision="builtin:tiny-controlnet-sdxl:v1", base=TINY)


def build_controlnet(arch: ControlNetArchitecture, *, seed: int = 0,
                     dtype: torch.dtype = torch.float32) -> Any:
    """A ControlNetModel of `arch` with weights drawn from `seed` on the CPU (the global RNG
    is left untouched): the same seed gives the same weights in every process."""
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**arch.base.unet)
        model = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=arch.conditioning_channels)
        for conv in (*model.controlnet_down_blocks, model.controlnet_mid_block):
            torch.nn.init.normal_(conv.weight, std=arch.zero_conv_std)
            torch.nn.init.normal_(conv.bias, std=arch.zero_conv_std / 5)
        embedding = model.controlnet_cond_embedding
        for conv in (embedding.conv_in, *embedding.blocks):
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            torch.nn.init.zeros_(conv.bias)
        fan_in = embedding.conv_out.weight[0].numel()
        torch.nn.init.normal_(embedding.conv_out.weight, std=arch.embedding_gain / fan_in ** 0.5)
        torch.nn.init.zeros_(embedding.conv_out.bias)
    model.eval().requires_grad_(False)
    return model.to(dtype=dtype) if dtype != torch.float32 else model
