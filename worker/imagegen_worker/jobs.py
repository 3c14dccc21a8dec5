"""Bridge from a validated request to the pipeline interface: the ImageJobs it expands to (one
per image, each with its own seed) and its compatibility key for batching.

Used by `intake` (key for the scheduler) and `batchrun` (jobs for ModelRunner.generate).
"""

from __future__ import annotations

import random
from collections.abc import Hashable

from .cachekey import image_seed
from .pipelines import ImageJob, batch_key
from .validate import ValidRequest

RANDOM_SEED_BOUND = 2**32  # drawn seeds fit every common tool's seed field


def draw_seeds(request: ValidRequest, rng: random.Random | None = None) -> list[int]:
    """Seeds of the request's images: seed, seed+1, … (unseeded: from a fresh random base)."""
    base = request.seed
    if base is None:
        base = (rng or random.SystemRandom()).randrange(RANDOM_SEED_BOUND)
    return [image_seed(base, i) for i in range(request.num_images)]


def image_jobs(request: ValidRequest, seeds: list[int]) -> list[ImageJob]:
    return [
        ImageJob(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            width=request.width,
            height=request.height,
            steps=request.steps,
            guidance=request.guidance,
            sampler=request.sampler,
            seed=seed,
        )
        for seed in seeds
    ]


def compat_key(request: ValidRequest) -> Hashable:
    """Requests with equal keys can share one pipeline call."""
    probe = image_jobs(request, [0])[0]
    return (request.model, batch_key(probe))
