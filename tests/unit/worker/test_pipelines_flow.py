"""Flow-matching families on the built-in tiny SD3 and Flux (real diffusers, CPU, no server).

What it fakes: nothing (real pipelines, random weights built in code). What it asserts: the
family → sampler → scheduler table, a sampler a family cannot use refused, each tiny model
drawing the requested size in 2 steps deterministically per seed through ModelRunner, every
family sampler leaving the shared scheduler alone, the loader's family check, saved copies
loading through file:// as their family's pipeline, and LoRA, img2img and inpainting on both.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    StableDiffusion3Pipeline,
)
from imagegen_api.families import FAMILIES
from imagegen_api.specs import SAMPLERS, ImageModelSpec, LoraAdapter
from imagegen_worker.pipelines import ImageJob, ModelRunner, flow, loader, runner, samplers
from PIL import Image

FAMILY_SOURCES = {"sd3": "builtin://tiny-sd3", "flux": "builtin://tiny-flux"}
PIPELINES = {"sd3": StableDiffusion3Pipeline, "flux": FluxPipeline}


def spec(family: str, **changes: object) -> ImageModelSpec:
    return ImageModelSpec(source=FAMILY_SOURCES[family], pipeline=family,  # type: ignore[arg-type]
                          defaults={"width": 64, "height": 64, "steps": 2, "guidance": 3.5},
                          **changes)


def job(seed: int, **changes: object) -> ImageJob:
    fields = {"prompt": "a photo of a red cat", "negative_prompt": "", "width": 96,
              "height": 64, "steps": 2, "guidance": 3.5, "sampler": "euler", "seed": seed}
    return ImageJob(**{**fields, **changes})  # type: ignore[arg-type]


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


@pytest.fixture(scope="module", params=["sd3", "flux"])
def model(request: pytest.FixtureRequest) -> ModelRunner:
    return ModelRunner.load(request.param, spec(request.param))


# --- the family → sampler → scheduler table ------------------------------------------------------


def test_every_family_sampler_has_a_scheduler_of_the_family_kind() -> None:
    assert {s for f in FAMILIES.values() for s in f.samplers} == set(SAMPLERS)
    for name, fam in FAMILIES.items():
        for sampler in fam.samplers:
            cls = samplers.schedulers(name)[sampler]
            flow_kind = cls.__name__.startswith("FlowMatch")
            assert flow_kind == (name in samplers.FLOW_FAMILIES), (name, sampler, cls)


def test_fresh_scheduler_is_new_per_call_and_keeps_the_model_config() -> None:
    config = dict(flow.TINY_FLUX.scheduler)
    a = samplers.fresh_scheduler("flux", "euler", config)
    b = samplers.fresh_scheduler("flux", "euler", config)
    assert a is not b and isinstance(a, FlowMatchEulerDiscreteScheduler)
    assert a.config.use_dynamic_shifting and a.config.shift == 3.0  # Flux's mu shift kept
    heun = samplers.fresh_scheduler("sd3", "heun", dict(flow.TINY_SD3.scheduler))
    assert type(heun).__name__ == "FlowMatchHeunDiscreteScheduler" and heun.config.shift == 3.0


@pytest.mark.parametrize(("family", "sampler", "allowed"), [
    ("sd3", "ddim", "euler, heun"), ("flux", "heun", "euler"), ("flux", "dpmpp_2m", "euler"),
    ("sdxl", "heun", "euler, euler_a, ddim, dpmpp_2m, lcm"),
])
def test_a_sampler_the_family_cannot_use_is_refused(family: str, sampler: str,
                                                    allowed: str) -> None:
    with pytest.raises(ValueError) as err:
        samplers.fresh_scheduler(family, sampler, {})
    assert f"sampler {sampler!r}" in str(err.value) and f"(allowed: {allowed})" in str(err.value)


# --- the tiny models ----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", [flow.TINY_SD3, flow.TINY_FLUX], ids=lambda a: a.name)
def test_tiny_flow_models_build_fast_and_identically(arch: flow.FlowArchitecture) -> None:
    before = torch.random.get_rng_state()
    started = time.monotonic()
    a = flow.build_flow_pipeline(arch, seed=runner.BUILTIN_SEED)
    elapsed = time.monotonic() - started
    b = flow.build_flow_pipeline(arch, seed=runner.BUILTIN_SEED)
    assert torch.equal(before, torch.random.get_rng_state()), "global RNG must be left alone"
    assert flow.fingerprint(a) == flow.fingerprint(b)
    assert flow.fingerprint(a) != flow.fingerprint(flow.build_flow_pipeline(arch, seed=1))
    assert elapsed < 5.0, f"{arch.name} took {elapsed:.1f}s to build"
    assert isinstance(a, PIPELINES[arch.family])
    assert a.vae.config.latent_channels == 16


def test_each_family_draws_the_requested_size_deterministically(model: ModelRunner) -> None:
    assert model.revision == f"builtin:tiny-{model.name}:v1"
    assert isinstance(model.pipeline, PIPELINES[model.name])
    first = model.generate([job(7)])
    again = model.generate([job(7)])
    other = model.generate([job(8)])
    assert first[0].size == (96, 64)
    assert np.array_equal(px(first[0]), px(again[0])), "same seed, same image"
    assert np.abs(px(first[0]) - px(other[0])).mean() > 1.0, "another seed, another image"
    assert px(first[0]).std() > 1.0, "not a blank image"


def test_every_family_sampler_runs_and_leaves_the_shared_scheduler_alone(
    model: ModelRunner,
) -> None:
    shared = model.pipeline.scheduler
    state = dict(shared.config), getattr(shared, "timesteps", None)
    images = {}
    for sampler in FAMILIES[model.name].samplers:
        (images[sampler],) = model.generate([job(3, sampler=sampler, width=64)])
        (again,) = model.generate([job(3, sampler=sampler, width=64)])
        assert np.array_equal(px(images[sampler]), px(again)), sampler
    assert model.pipeline.scheduler is shared
    assert (dict(shared.config), getattr(shared, "timesteps", None)) == state
    if len(images) > 1:
        assert not np.array_equal(px(images["euler"]), px(images["heun"]))


def test_a_unet_sampler_is_refused_by_a_flow_runner(model: ModelRunner) -> None:
    with pytest.raises(ValueError, match="cannot be used by a"):
        model.generate([job(1, sampler="ddim")])


def test_prompts_are_counted_with_the_t5_tokenizer(model: ModelRunner) -> None:
    assert model.prompt_window() == {"sd3": 256, "flux": 512}[model.name]
    assert model.count_tokens("a photo of a red cat") == 7  # six words and </s>
    assert model.count_tokens("zyx") == 4  # unknown words spell out: z y x </s>


def test_the_loader_refuses_weights_of_another_family(model: ModelRunner) -> None:
    with pytest.raises(loader.ModelLoadError, match="set pipeline to sd3 or flux"):
        loader.check_family(model.pipeline, "sdxl")
    sdxl = ModelRunner.load("tiny", ImageModelSpec(source="builtin://tiny-sdxl"))
    with pytest.raises(loader.ModelLoadError, match="set pipeline to sdxl, sd15 or auto"):
        loader.check_family(sdxl.pipeline, model.name)


def test_a_saved_copy_loads_through_file_as_its_family(
    model: ModelRunner, tmp_path: Path
) -> None:
    model.pipeline.save_pretrained(tmp_path / "weights")
    copy = ModelRunner.load("copy", spec(model.name).model_copy(
        update={"source": f"file://{tmp_path / 'weights'}"}))
    assert type(copy.pipeline) is type(model.pipeline)
    assert copy.revision.startswith("sha256:")
    assert np.array_equal(px(copy.generate([job(5)])[0]), px(model.generate([job(5)])[0]))


# --- LoRA, img2img, inpainting ------------------------------------------------------------------


def make_transformer_lora(family: str, folder: Path, *, seed: int) -> Path:
    """A LoRA made in code: peft adapters on the tiny transformer's attention, saved in
    diffusers' LoRA format by the family's pipeline class."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    arch = flow.ARCHITECTURES[f"tiny-{family}"]
    torch.manual_seed(seed)
    transformer = flow.build_flow_pipeline(arch, seed=runner.BUILTIN_SEED).transformer
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = {k: v * 2.0 for k, v in
             convert_state_dict_to_diffusers(get_peft_model_state_dict(transformer)).items()}
    PIPELINES[family].save_lora_weights(folder, transformer_lora_layers=state)
    return folder / "pytorch_lora_weights.safetensors"


def test_lora_adapters_switch_on_flow_models(model: ModelRunner, tmp_path: Path) -> None:
    lora = make_transformer_lora(model.name, tmp_path, seed=7)
    styled = ModelRunner.load("styled", spec(model.name, loras=[
        LoraAdapter(name="style", source=f"file://{lora}", weight=1.0)]))
    base = px(model.generate([job(4)])[0])
    with_style = px(styled.generate([job(4, loras=(("style", 1.0),))])[0])
    assert np.abs(with_style - base).mean() > 0.5, "the adapter changes pixels"
    assert np.array_equal(px(styled.generate([job(4, loras=())])[0]), base)
    assert np.array_equal(px(styled.generate([job(4, loras=(("style", 0.0),))])[0]), base)


def test_img2img_and_inpainting_on_flow_models(model: ModelRunner) -> None:
    init = Image.new("RGB", (96, 64), (220, 40, 40))
    mask = Image.new("L", (96, 64), 0)
    mask.paste(255, (0, 0, 48, 64))  # repaint the left half
    (img2img,) = model.generate([job(2, init_image=init, strength=0.6)])
    (inpainted,) = model.generate([job(2, init_image=init, mask_image=mask, strength=0.9)])
    assert img2img.size == inpainted.size == (96, 64)
    assert type(model._derived["img2img"]).__name__.endswith("Img2ImgPipeline")
    assert np.array_equal(px(inpainted)[:, 48:], px(init)[:, 48:]), "unmasked pixels kept"
    assert not np.array_equal(px(inpainted)[:, :48], px(init)[:, :48])


# --- speed levers -------------------------------------------------------------------------------


def test_speed_levers_apply_to_flow_transformers(model: ModelRunner) -> None:
    """channels_last, fuse_qkv, vae_tiling (allowed on the CPU here) and Flux's step cache run on
    the transformer pipelines; SD3's transformer has no step cache in diffusers: skipped, named."""
    from imagegen_api.specs import Optimizations

    arch = flow.ARCHITECTURES[f"tiny-{model.name}"]
    opts = Optimizations(channels_last=True, fuse_qkv=True, vae_tiling=True, step_cache=True)
    fast = ModelRunner.from_pipeline(
        "fast", flow.build_flow_pipeline(arch, seed=runner.BUILTIN_SEED),
        spec(model.name, optimizations=opts), revision="x", device="cpu",
        allow_cpu_levers=True)
    report = fast.optimizations
    assert {"channels_last", "fuse_qkv", "vae_tiling"} <= set(report.applied)
    if model.name == "flux":
        assert "step_cache" in report.applied
    else:
        assert report.skipped == {"step_cache": "diffusers has no step cache for "
                                                "SD3Transformer2DModel"}
    (image,) = fast.generate([job(9, width=64)])
    assert image.size == (64, 64)
    assert np.array_equal(px(image), px(fast.generate([job(9, width=64)])[0]))
