"""Train `builtin://shapes-sdxl` on the CPU, in code, from a seed; cache it as a diffusers folder.

    python -m imagegen_worker.pipelines.shapes_train [--check] [--cache DIR]

Run once per machine by `dev/setup` (so by `make demo` and `make test`) and by the tests that
need the model; a cached folder makes it a no-op. The folder is `builtin.shapes_dir()`, keyed by
a hash of this code, so a change to the recipe trains a new model and never serves stale weights.

The recipe (a few minutes on an idle 2-core machine; docs/benchmarks.md has the figures):
1. Build the tiny SDXL pipeline (architecture.SHAPES, the builtin seed): text encoders stay as
   built, fixed and random; distinct words already give distinct embeddings to condition on.
2. Replace the VAE with an AutoencoderTiny (architecture.SHAPES_VAE: taesdxl's design, 8x, 4
   latent channels, no group norms: those cannot learn flat colours, which is all these
   pictures are), train it as an autoencoder (L1 + MSE) on 64x64 scenes (log how many
   reconstructions read back right), then record the
   latents' per-channel mean and std in its config (`latents_mean`/`latents_std`, scaling 1.0):
   the SDXL pipeline un-normalises with them, so the UNet sees unit-variance latents.
3. Encode a fixed set of scenes once, then train the UNet to predict noise (epsilon, SDXL's
   noise schedule, min-SNR weighting), conditioned exactly as the pipeline conditions it:
   penultimate hidden states of both encoders, the pooled embedding and the 64x64 time ids;
   a tenth of the captions dropped to zeros, which is what the pipeline feeds as the
   unconditional input of classifier-free guidance. The saved UNet is an EMA of the weights.
Deterministic for a given seed, torch build and thread count (one thread, fixed).
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderTiny, DDPMScheduler

from . import architecture, builtin, shapes_data
from .runner import BUILTIN_SEED

Log = Callable[[str], None]
# Written next to the weights: how long training took here, and how busy the machine was.
TRAINING_RECORD = "training.json"


@dataclass(frozen=True)
class Recipe:
    """Every number that decides the trained weights (part of the code, so of the version)."""

    seed: int = BUILTIN_SEED
    threads: int = 1  # same weights whatever the core count; 2 threads crawl on a busy machine
    vae_steps: int = 2000
    vae_batch: int = 8
    vae_lr: float = 1e-3
    latent_scenes: int = 4096
    unet_steps: int = 2500
    unet_batch: int = 32
    unet_lr: float = 1e-3
    uncond_fraction: float = 0.1
    min_snr: float = 5.0
    ema_decay: float = 0.995


RECIPE = Recipe()


def ensure(root: Path | None = None, *, recipe: Recipe = RECIPE, log: Log = print) -> Path:
    """The trained folder, training it first when absent (one process at a time: a file lock)."""
    dest = builtin.shapes_dir(root)
    if (dest / "model_index.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.parent / ".train.lock"):
        if (dest / "model_index.json").is_file():  # another process trained it while we waited
            return dest
        log(f"training builtin://shapes-sdxl (version {dest.name}) into {dest}")
        load_before = os.getloadavg()[0]
        wall, cpu = time.monotonic(), time.process_time()
        pipe = train(recipe, log=log)
        record = {"version": dest.name, "recipe": asdict(recipe),
                  "wall_seconds": round(time.monotonic() - wall, 1),
                  "cpu_seconds": round(time.process_time() - cpu, 1),
                  "cpus": os.cpu_count(), "load_average_before": load_before,
                  "load_average_after": os.getloadavg()[0]}
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        pipe.save_pretrained(tmp)
        (tmp / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        tmp.rename(dest)  # atomic: a reader sees no folder or a complete one
    return dest


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def train(recipe: Recipe = RECIPE, *, log: Log = print) -> Any:
    """The tiny SDXL pipeline with its VAE and UNet trained on shapes (see the module doc)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    started = time.monotonic()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(recipe.seed)
            rng = np.random.default_rng(recipe.seed)
            pipe = architecture.build_sdxl_pipeline(architecture.SHAPES, seed=recipe.seed)
            pipe.register_modules(vae=_tiny_vae())
            train_vae(pipe.vae, rng, recipe, log=log)
            log(f"vae trained in {time.monotonic() - started:.0f}s")
            train_unet(pipe, rng, recipe, log=log)
            log(f"unet trained, {time.monotonic() - started:.0f}s in all")
    finally:
        torch.set_num_threads(threads)
    return pipe


def _tiny_vae() -> Any:
    """SHAPES_VAE as an AutoencoderTiny; the pipeline's key for the VAE factor goes in config."""
    config = dict(architecture.SHAPES_VAE)
    factor_key = config.pop("block_out_channels")
    vae: Any = AutoencoderTiny(**config)
    vae.register_to_config(block_out_channels=factor_key)
    return vae


def train_vae(vae: Any, rng: np.random.Generator, recipe: Recipe, *, log: Log) -> None:
    """Autoencoder training (L1 + MSE), then the latents' statistics written into its config."""
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    schedule = _cosine(opt, recipe.vae_steps, warmup=20)
    for step in range(recipe.vae_steps):
        pixels = torch.from_numpy(shapes_data.batch(rng, recipe.vae_batch)[0])
        recon = vae.decode(vae.encode(pixels).latents).sample
        loss = F.l1_loss(recon, pixels) + F.mse_loss(recon, pixels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if step % 100 == 0 or step == recipe.vae_steps - 1:
            log(f"vae step {step:5d}/{recipe.vae_steps} loss {loss.item():.4f}")
    vae.eval().requires_grad_(False)
    log(f"vae reconstructions read back right: {_vae_readback(vae, rng):.0%}")
    latents = _encode(vae, rng, 512)
    mean = latents.mean(dim=(0, 2, 3))
    std = latents.std(dim=(0, 2, 3))
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist(),
                           scaling_factor=1.0)


@torch.no_grad()
def _vae_readback(vae: Any, rng: np.random.Generator, n: int = 64) -> float:
    """Fraction of reconstructed scenes whose colours and shape shapes_measure reads right."""
    from PIL import Image

    from . import shapes_measure

    pixels, scenes = shapes_data.batch(rng, n)
    recon = vae.decode(vae.encode(torch.from_numpy(pixels)).latents).sample
    images = ((recon.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
    right = sum(shapes_measure.read(Image.fromarray(img)).matches(
        color=s.color, background=s.background, shape=s.shape)
        for img, s in zip(images, scenes, strict=True))
    return right / n


@torch.no_grad()
def _encode(vae: Any, rng: np.random.Generator, n: int,
            scenes: list[shapes_data.Scene] | None = None) -> torch.Tensor:
    """Posterior means of `n` new random scenes (appended to `scenes` when given)."""
    out = []
    for start in range(0, n, 64):
        pixels, drawn = shapes_data.batch(rng, min(64, n - start))
        out.append(vae.encode(torch.from_numpy(pixels)).latents)
        if scenes is not None:
            scenes.extend(drawn)
    return torch.cat(out)


def normalised(latents: torch.Tensor, vae: Any) -> torch.Tensor:
    """Latents as the UNet sees them (the inverse of the pipeline's un-normalisation)."""
    cfg = vae.config
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1)
    out: torch.Tensor = (latents - mean) / std * cfg.scaling_factor
    return out


def train_unet(pipe: Any, rng: np.random.Generator, recipe: Recipe, *, log: Log) -> None:
    """Epsilon-prediction training on pre-encoded scenes; the EMA weights end up in pipe.unet."""
    scenes: list[shapes_data.Scene] = []
    latents = normalised(_encode(pipe.vae, rng, recipe.latent_scenes, scenes), pipe.vae)
    captions = shapes_data.all_captions()
    index = {c: i for i, c in enumerate(captions)}
    caption_ids = torch.tensor([index[s.caption] for s in scenes])
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(
            captions, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    size = shapes_data.SIZE
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32)
    noise_schedule: Any = DDPMScheduler(**{
        k: v for k, v in architecture.SDXL_SCHEDULER.items()
        if k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps",
                 "prediction_type")})
    alphas = noise_schedule.alphas_cumprod
    snr = alphas / (1 - alphas)
    weight_of_t = torch.clamp(snr, max=recipe.min_snr) / snr  # min-SNR-gamma for epsilon

    unet = pipe.unet
    unet.train().requires_grad_(True)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.unet_lr, weight_decay=1e-2)
    schedule = _cosine(opt, recipe.unet_steps, warmup=100)
    gen = torch.Generator().manual_seed(recipe.seed)
    n, b = len(latents), recipe.unet_batch
    for step in range(recipe.unet_steps):
        pick = torch.randint(0, n, (b,), generator=gen)
        x0 = latents[pick]
        ids = caption_ids[pick]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, len(alphas), (b,), generator=gen)
        noisy = noise_schedule.add_noise(x0, noise, t)
        keep = (torch.rand(b, generator=gen) >= recipe.uncond_fraction).float()
        cond = embeds[ids] * keep.view(-1, 1, 1)
        cond_pooled = pooled[ids] * keep.view(-1, 1)
        pred = unet(noisy, t, encoder_hidden_states=cond,
                    added_cond_kwargs={"text_embeds": cond_pooled,
                                       "time_ids": time_ids.expand(b, -1)}).sample
        per_image = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (per_image * weight_of_t[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        decay = min(recipe.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        if step % 200 == 0 or step == recipe.unet_steps - 1:
            log(f"unet step {step:5d}/{recipe.unet_steps} loss {loss.item():.4f}")
    unet.load_state_dict(ema.state_dict())
    unet.eval().requires_grad_(False)


def _cosine(opt: torch.optim.Optimizer, steps: int, *, warmup: int
            ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to a tenth of the learning rate."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only say whether this version is trained (exit 1 if not)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache root (default $IMAGEGEN_CACHE or ~/.cache/imagegen-dev)")
    args = parser.parse_args(argv)
    dest = builtin.shapes_dir(args.cache)
    if args.check:
        trained = (dest / "model_index.json").is_file()
        print(f"{dest}: {'trained' if trained else 'not trained'}")
        return 0 if trained else 1
    if (dest / "model_index.json").is_file():
        print(f"builtin://shapes-sdxl is trained: {dest}")
        return 0
    started = time.monotonic()
    path = ensure(args.cache, log=lambda line: print(f"[shapes-sdxl] {line}", flush=True))
    print(f"builtin://shapes-sdxl trained in {time.monotonic() - started:.0f}s: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
