"""Pipeline families: what a model of each family can be asked for.

The one table the CRD rules (specs.ImageModelSpec), the worker's request validation and its
scheduler choice (worker pipelines/samplers.py maps these names to scheduler classes) read.
UNet families (sdxl, sd15, and auto, which loads UNet checkpoints by their model_index.json)
denoise with the DDPM-style schedulers; SD3 and Flux are flow-matching transformers: they need
FlowMatch schedulers (Flux also a resolution-dependent `mu` shift), image sides a multiple of
16 (8x VAE, then 2x2 patches), and Flux has no negative prompt (its guidance is distilled: an
input of the transformer, not a second pass). ControlNet is served for the UNet families whose
diffusers ControlNet pipeline the worker builds (sdxl, sd15); auto may be either, so it is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

UNET_SAMPLERS: tuple[str, ...] = ("euler", "euler_a", "ddim", "dpmpp_2m", "lcm")


@dataclass(frozen=True)
class Family:
    samplers: tuple[str, ...]  # request `sampler` values; the first is the natural default
    side_multiple: int  # width and height must be multiples of this (pixels)
    title: str  # in messages: "builtin://tiny-sd3 is an SD3 pipeline"
    negative_prompt: bool = True  # whether the pipeline reads a negative prompt
    controlnet: bool = False  # whether the worker serves ImageModel.spec.controlnets for it


FAMILIES = MappingProxyType({
    "sdxl": Family(UNET_SAMPLERS, 8, "an SDXL", controlnet=True),
    "sd15": Family(UNET_SAMPLERS, 8, "an SD 1.5", controlnet=True),
    "auto": Family(UNET_SAMPLERS, 8, "an auto"),
    # FlowMatchHeun takes no custom sigmas nor `mu`, which Flux's pipeline always passes.
    "sd3": Family(("euler", "heun"), 16, "an SD3"),
    "flux": Family(("euler",), 16, "a Flux", negative_prompt=False),
})

# builtin://<name> → the family of the pipeline built for it (tiny-* random, shapes-* trained).
BUILTIN_FAMILIES = MappingProxyType({
    "tiny-sdxl": "sdxl",
    "shapes-sdxl": "sdxl",
    "tiny-sd3": "sd3",
    "tiny-flux": "flux",
})

# builtin://<name> → the family of the base model a built-in ControlNet (random weights) fits.
BUILTIN_CONTROLNETS = MappingProxyType({
    "tiny-controlnet-sdxl": "sdxl",
})


def family(name: str) -> Family:
    """The family's facts; KeyError names the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown pipeline family {name!r} (known: {', '.join(FAMILIES)})") from None
