"""ControlNet on the built-in tiny SDXL (real diffusers, CPU): builtin://tiny-controlnet-sdxl is
loaded the first time a job names it and kept, its pipeline shares the loaded modules, the
control image changes the pixels, scale 0 draws what no control draws, and a seed repeats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from imagegen_api.specs import ImageModelSpec
from imagegen_worker.pipelines import ImageJob, ModelRunner, controlnet, controlnet_architecture
from PIL import Image

SPEC = ImageModelSpec(
    source="builtin://tiny-sdxl", defaults={"width": 64, "height": 64, "steps": 4},
    controlnets=[{"name": "edges", "source": "builtin://tiny-controlnet-sdxl"}])


@pytest.fixture(scope="module")
def tiny() -> ModelRunner:
    return ModelRunner.load("tiny", SPEC)


def control_image(phase: int = 0) -> Image.Image:
    """A checkerboard (what an edge or pose map looks like to a random ControlNet: structure)."""
    yy, xx = np.indices((64, 64))
    board = (((xx + phase) // 8 + yy // 8) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([board] * 3, axis=-1), "RGB")


def job(scale: float | None = None, image: Image.Image | None = None, **kw: object) -> ImageJob:
    fields: dict[str, object] = {"prompt": "a cat", "negative_prompt": "", "width": 64,
                                 "height": 64, "steps": 4, "guidance": 5.0, "sampler": "euler",
                                 "seed": 11}
    if scale is not None:
        img = image or control_image()
        fields.update(control=("edges", scale, f"digest-{id(img)}"), control_image=img)
    return ImageJob(**{**fields, **kw})  # type: ignore[arg-type]


def px(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.int16)


def test_control_changes_pixels_scale_zero_is_none_and_seed_repeats(tiny: ModelRunner) -> None:
    assert tiny.loaded_controlnets() == []  # lazily: nothing before a job names it
    plain = px(tiny.generate([job()])[0])
    controlled = px(tiny.generate([job(1.0)])[0])
    again = px(tiny.generate([job(1.0)])[0])
    zero = px(tiny.generate([job(0.0)])[0])
    other = px(tiny.generate([job(1.0, control_image(phase=4))])[0])

    assert tiny.loaded_controlnets() == ["edges"]
    assert np.abs(controlled - plain).mean() > 3  # the ControlNet steers the image
    assert np.abs(other - controlled).mean() > 1.5  # and the control image decides how
    assert np.abs(again - controlled).max() <= 1  # the seed still decides the rest
    assert np.abs(zero - plain).max() <= 1  # scale 0: the residuals are multiplied away
    # Kept, not reloaded; no second copy of the base weights.
    pipe = tiny.prepare_controlnet("edges")
    assert pipe is tiny.prepare_controlnet("edges")
    assert pipe.unet is tiny.pipeline.unet and pipe.vae is tiny.pipeline.vae
    assert type(pipe).__name__ == "StableDiffusionXLControlNetPipeline"


def test_batch_of_controlled_jobs_matches_single_calls(tiny: ModelRunner) -> None:
    img = control_image()
    jobs = [job(0.7, img, seed=s) for s in (3, 4)]
    batched = [px(i) for i in tiny.generate(jobs)]
    alone = [px(tiny.generate([j])[0]) for j in jobs]
    for b, a in zip(batched, alone, strict=True):
        assert np.abs(b - a).max() <= 2  # kernel rounding across batch sizes only


def test_undeclared_controlnet_is_refused(tiny: ModelRunner) -> None:
    with pytest.raises(ValueError, match="declares no ControlNet 'depth'"):
        tiny.prepare_controlnet("depth")


def test_builtin_controlnet_is_deterministic_and_not_zero() -> None:
    tiny = controlnet_architecture.TINY_CONTROLNET
    a = controlnet_architecture.build_controlnet(tiny, seed=controlnet.BUILTIN_SEED)
    b = controlnet_architecture.build_controlnet(tiny, seed=controlnet.BUILTIN_SEED)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name
    # The zero convolutions carry weights: a zero ControlNet would change nothing.
    assert float(a.controlnet_mid_block.weight.abs().mean()) > 0.1
