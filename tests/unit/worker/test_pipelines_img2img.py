"""img2img and inpainting on the built-in tiny SDXL (real diffusers, CPU): the pipelines made with
from_pipe share the loaded modules, the init image and strength change the pixels, and
inpainting keeps the unmasked region of the init image."""

from __future__ import annotations

import numpy as np
import pytest
from imagegen_api.specs import ImageModelSpec
from imagegen_worker.pipelines import ImageJob, ModelRunner
from PIL import Image

SPEC = ImageModelSpec(source="builtin://tiny-sdxl", defaults={"width": 64, "height": 64,
                                                             "steps": 4})


@pytest.fixture(scope="module")
def tiny() -> ModelRunner:
    return ModelRunner.load("tiny", SPEC)


def init_image() -> Image.Image:
    grad = np.linspace(0, 255, 64, dtype=np.uint8)
    rgb = np.stack([np.tile(grad, (64, 1)), np.tile(grad[:, None], (1, 64)),
                    np.full((64, 64), 90, np.uint8)], axis=-1)
    return Image.fromarray(rgb, "RGB")


def job(**kw: object) -> ImageJob:
    fields: dict[str, object] = {"prompt": "a cat", "negative_prompt": "", "width": 64,
                                 "height": 64, "steps": 4, "guidance": 5.0, "sampler": "euler",
                                 "seed": 11}
    return ImageJob(**{**fields, **kw})  # type: ignore[arg-type]


def px(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.int16)


def test_img2img_and_inpainting(tiny: ModelRunner) -> None:
    init = init_image()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))  # repaint the centre only
    t2i = px(tiny.generate([job()])[0])
    [strong] = [px(i) for i in tiny.generate([job(init_image=init, strength=0.9)])]
    [weak] = [px(i) for i in tiny.generate([job(init_image=init, strength=0.5)])]
    [again] = [px(i) for i in tiny.generate([job(init_image=init, strength=0.9)])]
    [inpainted] = [px(i) for i in tiny.generate([job(init_image=init, mask_image=mask,
                                                     strength=0.9)])]

    assert np.abs(strong - t2i).mean() > 5  # the init image matters
    assert np.abs(strong - weak).mean() > 1  # so does the strength
    assert np.abs(again - strong).max() <= 1  # and the seed still decides
    # Outside the mask: the init image, pixel for pixel; inside: repainted.
    keep = np.asarray(mask) == 0
    assert np.array_equal(inpainted[keep], px(init)[keep])
    assert np.abs(inpainted[~keep] - px(init)[~keep]).mean() > 5
    # No second copy of the weights: the derived pipelines hold the loaded modules.
    for mode in ("img2img", "inpaint"):
        derived = tiny._derived[mode]
        assert derived.unet is tiny.pipeline.unet and derived.vae is tiny.pipeline.vae
