"""Cache keys: sha256 over everything that decides the pixels (and bytes) of one image.

Pure; called by `intake` (lookup before queueing) and by the batch runner (store after upload).
Only seeded requests are cacheable. An unseeded request's seeds are derived from its request id
(`jobs.derived_seed`), so a regeneration of the same id repeats its images without the cache;
it is neither looked up nor stored, so that an unseeded request never shares images with another
id (two ids whose derived seeds collide, or a seeded request naming that seed). The model
revision is part of the key, so new weights never serve old images.
"""

from __future__ import annotations

import hashlib
import json

from .validate import ValidRequest

KEY_VERSION = 2  # bump when encoding or metadata changes what bytes a key stands for


def image_seed(base_seed: int, index: int) -> int:
    """Seed of image `index` of a request: base, base+1, … (the convention of common UIs)."""
    return base_seed + index


def image_key(request: ValidRequest, *, model_revision: str, seed: int, index: int) -> str:
    """Hex sha256 naming image `index` of `request` generated with `seed`."""
    params = {
        "v": KEY_VERSION,
        "model": request.model,
        "revision": model_revision,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "guidance": repr(float(request.guidance)),
        "sampler": request.sampler,
        "seed": seed,
        "format": request.output_format,
        "index": index,
    }
    if request.output_format != "png":  # lossless png ignores quality
        params["quality"] = request.quality
    if not request.watermark:
        params["watermark"] = False
    if request.loras:  # only then: keys of requests without adapters stay as they were
        params["loras"] = [[name, repr(weight)] for name, weight in request.loras]
    cond = request.conditioning
    if cond is not None:  # only then: text-to-image keys stay as they were
        params["init_image"] = cond.image_sha256
        params["strength"] = repr(cond.strength)
        if cond.mask_sha256 is not None:
            params["mask"] = cond.mask_sha256
    ctl, ctl_image = request.control, request.control_image
    if ctl is not None:  # only then: keys without a ControlNet stay as they were
        params["control"] = [ctl.name, ctl.source, repr(ctl.scale),
                             ctl_image.sha256 if ctl_image else None]
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_keys(request: ValidRequest, *, model_revision: str) -> list[str] | None:
    """Keys of all images of a seeded request, in order; None for an unseeded request."""
    if request.seed is None:
        return None
    return [
        image_key(request, model_revision=model_revision, seed=image_seed(request.seed, i),
                  index=i)
        for i in range(request.num_images)
    ]
