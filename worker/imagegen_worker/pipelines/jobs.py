"""What one image asks of a pipeline, and which images may share a pipeline call.

The consumer turns each validated request into one `ImageJob` per image (seeds already chosen),
groups jobs by `batch_key`, and hands each group to `ModelRunner.generate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Active adapters as (name, weight) pairs, sorted by name, no zero weights; None: the model's
# declared adapters at their declared weights (what a model with LoRAs served before requests
# could choose).
Adapters = tuple[tuple[str, float], ...]
Control = tuple[str, float, str]


@dataclass(frozen=True)
class ImageJob:
    """One image to generate; `seed` alone decides its initial noise."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    sampler: str
    seed: int
    loras: Adapters | None = None
    # img2img / inpainting: the init image (PIL RGB) and mask (PIL L, white = repaint) this
    # image starts from; they differ per job, so they are not part of the batch key.
    init_image: Any = field(default=None, compare=False)
    mask_image: Any = field(default=None, compare=False)
    strength: float | None = None  # set exactly when init_image is
    # ControlNet: (declared name, conditioning scale, sha256 of the control image) and the
    # control image (PIL RGB, the job's size). One ControlNet and scale per pipeline call.
    control: Control | None = None
    control_image: Any = field(default=None, compare=False)

    @property
    def mode(self) -> str:
        """txt2img | img2img | inpaint: which pipeline serves the job."""
        if self.init_image is None:
            return "controlnet" if self.control is not None else "txt2img"
        return "inpaint" if self.mask_image is not None else "img2img"


BatchKey = tuple[int, int, int, float, str, bool, Adapters | None, str, float | None,
                 Control | None]


def batch_key(job: ImageJob) -> BatchKey:
    """Jobs with equal keys can run in one pipeline call.

    Size, steps, guidance and sampler are shared by a whole call. Whether the negative prompt is
    empty is part of the key too: SDXL uses zero embeddings for an empty negative prompt only
    when every negative prompt of the call is empty, so mixing the two would change the image a
    seed gives depending on its batch companions. The adapter set is set on the pipeline's
    modules for a whole call, so it is part of the key as well. So are the mode (each mode is
    its own pipeline) and the strength (one per call: it decides the timesteps), and the
    ControlNet, its scale and the control image's digest (one ControlNet and scale per call;
    equal images keep a call's inputs uniform).
    """
    return (job.width, job.height, job.steps, float(job.guidance), job.sampler,
            not job.negative_prompt, job.loras, job.mode, job.strength, job.control)
