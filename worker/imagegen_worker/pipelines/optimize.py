"""Speed levers of `ImageModelSpec.optimizations`, applied once to a loaded pipeline.

Called by `ModelRunner.from_pipeline`. Each lever is reported as applied or skipped with a reason
(logged at load and shown by the benchmark):

- sdpa: PyTorch's scaled_dot_product_attention, diffusers' default processor in torch 2 (always).
- channels_last: UNet and VAE convolutions in NHWC (CUDA only; pixels unchanged).
- fuse_qkv: one matmul for q, k, v (diffusers' fuse_qkv_projections; not with LoRAs, whose
  layers would be bypassed by the fused projection).
- vae_tiling: decode large images in tiles (any device; lower memory, seams blended).
- compile: torch.compile of the denoiser only, `dynamic=False` (CUDA only). Every new shape
  (batch bucket x size) compiles once; the runner pads batches to power-of-two buckets so at most
  log2(max batch) shapes exist per size. Mode from $IMAGEGEN_COMPILE_MODE (default
  max-autotune-no-cudagraphs); keep $TORCHINDUCTOR_CACHE_DIR on a volume to reuse compiled
  kernels across restarts.
- step_cache: diffusers' first-block cache, on denoisers that have one (Flux's transformer; not
  SD3's in diffusers 0.42, nor UNets: DeepCache would be a new package), skipped elsewhere.
- fp8: skipped: fp8 matmuls need torchao, which the worker image does not carry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from imagegen_api.specs import Optimizations

log = logging.getLogger(__name__)

ENV_COMPILE_MODE = "IMAGEGEN_COMPILE_MODE"
DEFAULT_COMPILE_MODE = "max-autotune-no-cudagraphs"
STEP_CACHE_THRESHOLD = 0.05  # first-block residual change below which a step is reused


@dataclass
class OptimizationReport:
    applied: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    compiled: bool = False

    def summary(self) -> str:
        skipped = ", ".join(f"{k} ({v})" for k, v in self.skipped.items())
        return f"applied: {', '.join(self.applied) or 'none'}; skipped: {skipped or 'none'}"


def denoiser(pipe: Any) -> Any:
    """The network run at every step: the UNet, or the transformer of DiT pipelines."""
    module = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if module is None:
        raise ValueError(f"{type(pipe).__name__} has neither a unet nor a transformer")
    return module


def apply(
    pipe: Any,
    opts: Optimizations,
    device: str,
    *,
    has_loras: bool = False,
    allow_cpu: bool = False,
    compile_mode: str | None = None,
) -> OptimizationReport:
    """Apply the levers `opts` asks for; `allow_cpu` lets the CPU benchmark exercise CUDA ones."""
    report = OptimizationReport(applied=["sdpa"])
    cuda_only = None if device.startswith("cuda") or allow_cpu else "cuda only"
    net = denoiser(pipe)
    mode = compile_mode or os.environ.get(ENV_COMPILE_MODE) or DEFAULT_COMPILE_MODE
    levers: list[tuple[str, bool, str | None, Callable[[], None]]] = [
        ("channels_last", opts.channels_last, cuda_only, lambda: _channels_last(pipe, net)),
        ("fuse_qkv", opts.fuse_qkv, "LoRA adapters loaded" if has_loras else None,
         lambda: _fuse_qkv(pipe, net)),
        ("vae_tiling", opts.vae_tiling, None, lambda: pipe.vae.enable_tiling()),
        ("step_cache", opts.step_cache,
         None if hasattr(net, "enable_cache")
         else f"diffusers has no step cache for {type(net).__name__}",
         lambda: _step_cache(net)),
        ("fp8", opts.fp8, "needs torchao (not installed)", lambda: None),
        ("compile", opts.compile, cuda_only, lambda: _compile(net, mode)),
    ]
    for name, wanted, blocked, action in levers:
        if not wanted:
            continue
        if blocked:
            report.skipped[name] = blocked
        else:
            action()
            report.applied.append(name)
    report.compiled = "compile" in report.applied
    log.info("optimizations on %s: %s", device, report.summary())
    return report


def _channels_last(pipe: Any, net: Any) -> None:
    net.to(memory_format=torch.channels_last)
    if getattr(pipe, "vae", None) is not None:
        pipe.vae.to(memory_format=torch.channels_last)


def _fuse_qkv(pipe: Any, net: Any) -> None:
    if getattr(pipe, "unet", None) is not None:
        pipe.fuse_qkv_projections()
    else:
        net.fuse_qkv_projections()


def _step_cache(net: Any) -> None:
    from diffusers import FirstBlockCacheConfig

    net.enable_cache(FirstBlockCacheConfig(threshold=STEP_CACHE_THRESHOLD))


def _compile(net: Any, mode: str) -> None:
    import torch._dynamo
    import torch._inductor.config as inductor

    # One compiled graph per (bucket, size): leave room for many before dynamo gives up.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    inductor.conv_1x1_as_mm = True
    net.compile(mode=mode, fullgraph=False, dynamic=False)
