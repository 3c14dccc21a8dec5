"""Bridge from a validated request to the pipeline interface: the ImageJobs it expands to (one
per image, each with its own seed) and its compatibility key for batching.

Used by `intake` (key for the scheduler) and `batchrun` (jobs for ModelRunner.generate).

An unseeded request's seeds are derived from sha256(namespace/pool/request id), not drawn at
random: a request generated again (a client retry after its job record was lost in a Redis
outage or flush) gets the same seeds, so the same images and object keys, while different ids
(or the same id in another pool) get different seeds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable

from .cachekey import image_seed
from .pipelines import ImageJob, batch_key
from .validate import ValidRequest

DERIVED_SEED_BOUND = 2**32  # derived seeds fit every common tool's seed field


def derived_seed(namespace: str, pool: str, request_id: str) -> int:
    """Base seed of an unseeded request: the first 4 bytes of sha256(namespace/pool/id)."""
    digest = hashlib.sha256(f"{namespace}/{pool}/{request_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % DERIVED_SEED_BOUND


def draw_seeds(request: ValidRequest, *, namespace: str, pool: str) -> list[int]:
    """Seeds of the request's images: seed, seed+1, … (unseeded: from the derived base seed)."""
    base = request.seed
    if base is None:
        base = derived_seed(namespace, pool, request.request_id)
    return [image_seed(base, i) for i in range(request.num_images)]


def image_jobs(request: ValidRequest, seeds: list[int]) -> list[ImageJob]:
    cond = request.conditioning
    if request.init is not None and cond is None:
        raise ValueError(f"request {request.request_id}: init image not resolved")
    ctl, ctl_image = request.control, request.control_image
    if ctl is not None and ctl_image is None:
        raise ValueError(f"request {request.request_id}: control image not resolved")
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
            loras=request.loras,
            init_image=cond.image if cond else None,
            mask_image=cond.mask if cond else None,
            strength=cond.strength if cond else None,
            control=(ctl.name, ctl.scale, ctl_image.sha256) if ctl and ctl_image else None,
            control_image=ctl_image.image if ctl_image else None,
        )
        for seed in seeds
    ]


def compat_key(request: ValidRequest) -> Hashable:
    """Requests with equal keys can share one pipeline call."""
    probe = image_jobs(request, [0])[0]
    return (request.model, batch_key(probe))
