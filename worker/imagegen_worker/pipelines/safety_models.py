"""Post-generation safety checkers (GenerationPool spec.safety.checker): image classifiers that
score each generated image in [0, 1]. The worker (`safety`) blocks an image whose score is
above the pool's threshold; this module only scores.

    builtin://redness   RednessClassifier, built in code: score = the image's mean redness
                        (per pixel max(0, R - (G + B) / 2), channels in [0, 1]). A solid red
                        image scores 1, grey, white, black, green or blue 0. Tests and demos
                        choose what is flagged by the colours they ask for.
    hf:// s3:// pvc:// file://
                        a diffusers StableDiffusionSafetyChecker (its folder, or a model folder
                        with safety_checker/ and feature_extractor/ beside it), preprocessed by
                        its CLIPImageProcessor. Score = 0.5 + the largest margin of the image's
                        embedding over a concept's threshold (the special-care adjustment
                        included, as diffusers computes it), clipped to [0, 1]: above 0.5 is
                        exactly what the checker itself flags.

Both are real models run on the pixels, in batches, under torch.inference_mode.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..logs import fields
from ..safety import Verdict
from . import sources
from .loader import resolve_device

log = logging.getLogger(__name__)

REDNESS_REVISION = "builtin:redness:v1"


class RednessClassifier(nn.Module):
    """A 1x1 convolution (R - G/2 - B/2), ReLU, global mean: the image's mean redness."""

    def __init__(self) -> None:
        super().__init__()
        self.redness = nn.Conv2d(3, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            self.redness.weight.copy_(torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1))
        self.redness.weight.requires_grad_(False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] → (N,) scores in [0, 1]."""
        return torch.relu(self.redness(pixels)).mean(dim=(1, 2, 3)).clamp(0.0, 1.0)


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """Images of one size → (N, 3, H, W) float32 in [0, 1]."""
    arrays = [np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class BuiltinChecker:
    def __init__(self, device: str) -> None:
        self.device = device
        self.revision = REDNESS_REVISION
        self.model = RednessClassifier().to(device).eval()

    def score(self, images: list[Image.Image]) -> list[Verdict]:
        out: list[Verdict | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(img.size, []).append(i)
        with torch.inference_mode():
            for idx in by_size.values():
                scores = self.model(to_tensor([images[i] for i in idx]).to(self.device))
                for i, s in zip(idx, scores.cpu().tolist(), strict=True):
                    out[i] = Verdict(float(s), "redness")
        return [s for s in out if s is not None]


class DiffusersChecker:
    """diffusers' StableDiffusionSafetyChecker with its CLIP image processor."""

    def __init__(self, folder: Path, revision: str, device: str) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import CLIPImageProcessor

        model_dir, processor_dir = checker_folders(folder)
        self.device = device
        self.revision = revision
        self.processor = CLIPImageProcessor.from_pretrained(processor_dir)
        model: Any = StableDiffusionSafetyChecker.from_pretrained(model_dir)
        self.model = model.to(device).eval()

    def score(self, images: list[Image.Image]) -> list[Verdict]:
        rgb = [img.convert("RGB") for img in images]
        clip_input = self.processor(images=rgb, return_tensors="pt").pixel_values
        with torch.inference_mode():
            margins = concept_margins(self.model, clip_input.to(self.device, self.model.dtype))
        best, concept = margins.max(dim=1)
        return [Verdict(min(1.0, max(0.0, 0.5 + float(m))), f"concept {int(c)}")
                for m, c in zip(best.cpu().tolist(), concept.cpu().tolist(), strict=True)]


def concept_margins(model: Any, clip_input: torch.Tensor) -> torch.Tensor:
    """(N, concepts) cosine similarity minus each concept's threshold, plus 0.01 where a
    special-care concept matched: `StableDiffusionSafetyChecker.forward_onnx`'s concept scores,
    which the checker flags when any is above 0."""
    pooled = model.vision_model(clip_input)[1]
    embeds = nn.functional.normalize(model.visual_projection(pooled).float(), dim=-1)
    special = embeds @ nn.functional.normalize(model.special_care_embeds.float(), dim=-1).T
    concepts = embeds @ nn.functional.normalize(model.concept_embeds.float(), dim=-1).T
    special_care = (special - model.special_care_embeds_weights.float() > 0).any(dim=1)
    adjustment = special_care.float().unsqueeze(1) * 0.01
    result: torch.Tensor = concepts - model.concept_embeds_weights.float() + adjustment
    return result


def checker_folders(folder: Path) -> tuple[Path, Path]:
    """(checker weights, image processor config): the folder itself, or a model folder's
    safety_checker/ and feature_extractor/ (how SD 1.x repositories ship it)."""
    if (folder / "safety_checker").is_dir():
        processor = folder / "feature_extractor"
        return folder / "safety_checker", processor if processor.is_dir() else folder
    return folder, folder


Checker = BuiltinChecker | DiffusersChecker


def load_checker(source: str, *, device: str | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> Checker:
    """The checker a `spec.safety.checker.source` names, on `device` (None: the runner's
    choice, cuda when present)."""
    dev = resolve_device(device)
    if source.startswith("builtin://"):
        name = source.removeprefix("builtin://")
        if name != "redness":
            raise ValueError(f"unknown builtin safety checker {name!r} (known: ['redness'])")
        return BuiltinChecker(dev)
    weights = sources.resolve(source, cache_dir=cache_dir)
    assert weights.path is not None  # only builtin sources have none
    log.info("safety checker weights", extra=fields(source=source, revision=weights.revision))
    return DiffusersChecker(weights.path, weights.revision, dev)
