"""SDXL-architecture pipelines with random weights, built in code (no download).

Two sizes of the same architecture: `TINY` backs `builtin://tiny-sdxl` (CPU tests) and, trained
(`SHAPES`, shapes_train.py), `builtin://shapes-sdxl` (the CPU demo); `SDXL_BASE` is the real SDXL
base 1.0 shape the GPU benchmark measures. Both are a genuine
`StableDiffusionXLPipeline`: two CLIP text encoders (the second with a projection for the pooled
embedding), a UNet with `text_time` added conditioning, an AutoencoderKL and an Euler scheduler,
so every code path the worker runs on a real SDXL checkpoint runs on them too.

Why the tiny shape is what it is:
- The VAE keeps SDXL's 8x downsampling (four blocks) so a request's latents have SDXL's shape
  (1024² → 128²); only channel counts shrink. A 2x VAE, as in diffusers' own tests, would make a
  1024² request 16 times more work for the UNet.
- The UNet keeps SDXL's wiring (DownBlock2D then cross-attention blocks, linear projections,
  per-block transformer depth, 6 time ids + pooled text as added embedding) at 32/64 channels.
- Text encoders are two-layer CLIPs whose hidden sizes add up to the UNet's cross-attention width
  (32 + 32 = 64), like CLIP-L + OpenCLIP-bigG (768 + 1280 = 2048) in SDXL.

Weights come from a fixed seed on the CPU in float32, so every process of the same image builds
bit-identical weights; `revision` names that (bump the version when the shape changes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from . import tokenizer as tiny_tokenizer

# SDXL base 1.0's scheduler (scheduler/scheduler_config.json of the published checkpoint).
SDXL_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}


@dataclass(frozen=True)
class SdxlArchitecture:
    """Configs of the four SDXL models; the tokenizer is always the offline one."""

    name: str
    revision: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    text_encoder_2: dict[str, Any]
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SDXL_SCHEDULER))


TINY = SdxlArchitecture(
    name="tiny-sdxl",
    revision="builtin:tiny-sdxl:v2",  # v2: the tokenizer learned the shapes words
    unet={
        "sample_size": 8,  # latents of a 64x64 image: the pipeline's default size
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (2, 4),
        "transformer_layers_per_block": (1, 1),
        "use_linear_projection": True,
        "cross_attention_dim": 64,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 6 * 8 + 32,
        "norm_num_groups": 8,
    },
    vae={
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (8, 16, 32, 32),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 64,
        "scaling_factor": 0.13025,
        "force_upcast": True,
    },
    text_encoder={
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": 32,
        "hidden_act": "quick_gelu",
    },
    text_encoder_2={
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": 32,
        "hidden_act": "gelu",
    },
)

# builtin://shapes-sdxl: TINY trained on coloured shapes (shapes_train), with one change: its
# VAE is an AutoencoderTiny (SHAPES_VAE, the design of taesdxl, SDXL's drop-in tiny VAE: 8x
# downsampling, 4 latent channels). AutoencoderKL's group norms make flat colours, which are all
# these pictures are, nearly unlearnable at this size: normalising a flat picture's features
# erases its colour, and it took thousands of steps to fit even seven plain colours.
SHAPES = SdxlArchitecture(
    name="shapes-sdxl",
    revision="builtin:shapes-sdxl",  # the served revision adds the training code's version
    unet=dict(TINY.unet),
    vae=dict(TINY.vae),  # replaced by SHAPES_VAE before training
    text_encoder=dict(TINY.text_encoder),
    text_encoder_2=dict(TINY.text_encoder_2),
)
SHAPES_VAE: dict[str, Any] = {
    "encoder_block_out_channels": (16, 16, 16, 16),
    "decoder_block_out_channels": (16, 16, 16, 16),
    "num_encoder_blocks": (1, 1, 1, 1),
    "num_decoder_blocks": (1, 1, 1, 1),
    "latent_channels": 4,
    # The SDXL pipeline reads the VAE's factor from this key (AutoencoderKL's); kept in config.
    "block_out_channels": (16, 16, 16, 16),
}

# stabilityai/stable-diffusion-xl-base-1.0, from its published config files.
SDXL_BASE = SdxlArchitecture(
    name="sdxl-base-1.0-random",
    revision="random:sdxl-base-1.0",
    unet={
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (320, 640, 1280),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (5, 10, 20),
        "transformer_layers_per_block": (1, 2, 10),
        "use_linear_projection": True,
        "cross_attention_dim": 2048,
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,  # 6 time ids x 256 + pooled 1280
        "norm_num_groups": 32,
    },
    vae={
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (128, 256, 512, 512),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 1024,
        "scaling_factor": 0.13025,
        "force_upcast": True,
    },
    # CLIP ViT-L/14 text tower.
    text_encoder={
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
        "vocab_size": 49408,
    },
    # OpenCLIP ViT-bigG/14 text tower.
    text_encoder_2={
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "projection_dim": 1280,
        "hidden_act": "gelu",
        "vocab_size": 49408,
    },
)


def _text_config(overrides: dict[str, Any], tok: Any) -> CLIPTextConfig:
    settings = {
        "vocab_size": tiny_tokenizer.vocab_size(),
        "max_position_embeddings": tiny_tokenizer.MAX_LENGTH,
        **overrides,
        # Pooling looks for the end-of-text id: it must be the tokenizer's.
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    return CLIPTextConfig(**settings)


def build_sdxl_pipeline(
    arch: SdxlArchitecture,
    *,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A StableDiffusionXLPipeline of this architecture with weights drawn from `seed`.

    Modules are created directly on `device` (random init on a GPU takes seconds for the full
    SDXL, minutes on a CPU) in float32, then cast to `dtype`. The global RNG is left untouched.
    """
    tok = tiny_tokenizer.build_tokenizer()
    target = torch.device(device)
    cuda = [target.index or 0] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.device(target):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(_text_config(arch.text_encoder, tok))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(arch.text_encoder_2, tok))
        unet = UNet2DConditionModel(**arch.unet)
        vae = AutoencoderKL(**arch.vae)
    modules: tuple[Any, ...] = (text_encoder, text_encoder_2, unet, vae)
    for module in modules:
        module.eval().requires_grad_(False)
        if dtype != torch.float32:
            module.to(dtype=dtype)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tok,
        tokenizer_2=tiny_tokenizer.build_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(**arch.scheduler),
        add_watermarker=False,
    )


def fingerprint(pipe: Any) -> str:
    """sha256 over the four models' weights and the tokenizer's vocabulary (first 16 hex)."""
    digest = hashlib.sha256()
    for name in ("text_encoder", "text_encoder_2", "unet", "vae"):
        for key, tensor in sorted(getattr(pipe, name).state_dict().items()):
            digest.update(f"{name}.{key}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(repr(sorted(pipe.tokenizer.get_vocab().items())).encode())
    return digest.hexdigest()[:16]
