"""SD3- and Flux-architecture pipelines with random weights, built in code (no download).

Back `builtin://tiny-sd3` and `builtin://tiny-flux`: tiny but genuine `StableDiffusion3Pipeline`
and `FluxPipeline` objects, so every code path the worker runs on a flow-matching checkpoint
(flow-matching schedulers, Flux's resolution-dependent `mu` shift, T5 prompts, 16-channel
latents, 2x2 patches) runs on the CPU in tests. The SDXL tiny model is architecture.py's.

What is kept from the real models, and why:
- The VAE is an AutoencoderKL with 8x downsampling and 16 latent channels, with the real
  scaling and shift factors and no quant convs (as SD3's and Flux's): latents have the real
  shape (1024² → 16x128²). Only channel counts shrink.
- The transformers patch 2x2 (SD3's patch embed, Flux's packing), so image sides must be
  multiples of 16, as on the real models.
- Text: SD3 has two CLIPs with projections (pooled = both projections) plus a T5 (256 tokens);
  Flux one CLIP (pooled = its hidden size) plus a T5 (512 tokens). The CLIP tokenizer is the
  SDXL tiny one (tokenizer.py), the T5 one is t5tokenizer.py.
- The scheduler is FlowMatchEulerDiscreteScheduler with the published configs: SD3 a static
  shift of 3; Flux dynamic shifting (`mu` from the image's token count).

Weights come from a fixed seed on the CPU in float32 (the global RNG untouched), so every
process builds bit-identical weights; `revision` names that (bump it when a shape changes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from . import t5tokenizer
from . import tokenizer as clip_tokenizer
from .architecture import TINY, _text_config


@dataclass(frozen=True)
class FlowArchitecture:
    """Configs of a flow-matching pipeline's models; tokenizers are always the offline ones."""

    name: str
    family: str  # the ImageModel pipeline family: sd3 or flux
    revision: str
    transformer: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]  # CLIP
    t5: dict[str, Any]
    t5_window: int  # tokens the pipeline gives T5 (its max_sequence_length default)
    scheduler: dict[str, Any]
    text_encoder_2: dict[str, Any] | None = None  # SD3's second CLIP


_CLIP: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
}
# T5 v1.1 (gated GELU) as SD3's and Flux's T5-XXL, at 64 wide.
_T5: dict[str, Any] = {
    "d_model": 64,
    "d_kv": 16,
    "d_ff": 128,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
    "is_encoder_decoder": False,
    "use_cache": False,
}


def _vae(scaling_factor: float, shift_factor: float) -> dict[str, Any]:
    """The tiny SDXL VAE's body with the flow families' 16 latent channels, their scaling and
    shift, and no quant convs (as SD3's and Flux's VAEs)."""
    body = {k: v for k, v in TINY.vae.items() if k != "force_upcast"}
    return {**body, "latent_channels": 16, "scaling_factor": scaling_factor,
            "shift_factor": shift_factor, "use_quant_conv": False, "use_post_quant_conv": False}


TINY_SD3 = FlowArchitecture(
    name="tiny-sd3",
    family="sd3",
    revision="builtin:tiny-sd3:v1",
    transformer={
        "sample_size": 8,  # latents of a 64x64 image
        "patch_size": 2,
        "in_channels": 16,
        "out_channels": 16,
        "num_layers": 2,
        "attention_head_dim": 8,
        "num_attention_heads": 4,
        "joint_attention_dim": _T5["d_model"],  # CLIP states (32 + 32) are padded to T5's width
        "caption_projection_dim": 32,  # = heads x head dim, as in SD3
        "pooled_projection_dim": 2 * _CLIP["projection_dim"],
        "pos_embed_max_size": 96,  # SD3's: sides up to 96 patches (1536 px)
    },
    vae=_vae(1.5305, 0.0609),  # SD3's VAE factors
    text_encoder=dict(_CLIP),
    text_encoder_2={**_CLIP, "hidden_act": "gelu"},
    t5=dict(_T5),
    t5_window=256,
    scheduler={"num_train_timesteps": 1000, "shift": 3.0},  # SD3 medium's
)

TINY_FLUX = FlowArchitecture(
    name="tiny-flux",
    family="flux",
    revision="builtin:tiny-flux:v1",
    transformer={
        "patch_size": 1,
        "in_channels": 16 * 4,  # 2x2 patches of 16-channel latents, packed
        "num_layers": 1,
        "num_single_layers": 2,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": _T5["d_model"],
        "pooled_projection_dim": _CLIP["hidden_size"],  # Flux pools CLIPTextModel's output
        "guidance_embeds": True,  # as FLUX.1-dev: guidance is an input, not two passes
        "axes_dims_rope": (4, 6, 6),  # sums to attention_head_dim
    },
    vae=_vae(0.3611, 0.1159),  # Flux's VAE factors
    text_encoder=dict(_CLIP),
    t5=dict(_T5),
    t5_window=512,
    scheduler={  # FLUX.1-dev's
        "num_train_timesteps": 1000,
        "shift": 3.0,
        "use_dynamic_shifting": True,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
    },
)

ARCHITECTURES = {a.name: a for a in (TINY_SD3, TINY_FLUX)}


def _t5_config(arch: FlowArchitecture) -> T5Config:
    # pad 0 and </s> 1, as t5tokenizer numbers them (and every T5)
    return T5Config(vocab_size=t5tokenizer.vocab_size(), pad_token_id=0, eos_token_id=1,
                    **arch.t5)


def build_flow_pipeline(
    arch: FlowArchitecture,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Any:
    """The architecture's pipeline with weights drawn from `seed`, on the CPU, cast to `dtype`."""
    clip_tok = clip_tokenizer.build_tokenizer()
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        models: dict[str, Any] = {}
        if arch.family == "sd3":
            assert arch.text_encoder_2 is not None, "SD3 has two CLIP text encoders"
            models["text_encoder"] = CLIPTextModelWithProjection(
                _text_config(arch.text_encoder, clip_tok))
            models["text_encoder_2"] = CLIPTextModelWithProjection(
                _text_config(arch.text_encoder_2, clip_tok))
            models["text_encoder_3"] = T5EncoderModel(_t5_config(arch))
            models["transformer"] = SD3Transformer2DModel(**arch.transformer)
        else:
            models["text_encoder"] = CLIPTextModel(_text_config(arch.text_encoder, clip_tok))
            models["text_encoder_2"] = T5EncoderModel(_t5_config(arch))
            models["transformer"] = FluxTransformer2DModel(**arch.transformer)
        models["vae"] = AutoencoderKL(**arch.vae)
    for module in models.values():
        module.eval().requires_grad_(False)
        if dtype != torch.float32:
            module.to(dtype=dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(**arch.scheduler)
    t5_tok = t5tokenizer.build_tokenizer(arch.t5_window)
    if arch.family == "sd3":
        return StableDiffusion3Pipeline(scheduler=scheduler, tokenizer=clip_tok,
                                        tokenizer_2=clip_tokenizer.build_tokenizer(),
                                        tokenizer_3=t5_tok, **models)
    return FluxPipeline(scheduler=scheduler, tokenizer=clip_tok, tokenizer_2=t5_tok, **models)


def fingerprint(pipe: Any) -> str:
    """sha256 over every model's weights (first 16 hex): same seed and torch, same value."""
    digest = hashlib.sha256()
    for name, module in sorted(pipe.components.items()):
        if not isinstance(module, torch.nn.Module):
            continue
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}.{key}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
