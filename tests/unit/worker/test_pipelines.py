"""The pipeline runner on the built-in tiny SDXL, on the CPU, with no server.

What it fakes: nothing (real diffusers, real tiny weights built in code). What it asserts: seeds
decide images whatever the batch, every sampler runs without touching the shared scheduler,
batch keys, token counts, dtype fallback, and that a saved copy of the tiny pipeline loaded
through file:// and pvc:// draws exactly the builtin's images.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from imagegen_api.specs import ImageModelSpec, LoraAdapter, Optimizations
from imagegen_worker.pipelines import (
    SAMPLER_SCHEDULERS,
    ImageJob,
    ModelRunner,
    architecture,
    batch_key,
    loader,
    optimize,
    runner,
    tokenizer,
)

SPEC = ImageModelSpec(
    source="builtin://tiny-sdxl",
    defaults={"width": 64, "height": 64, "steps": 4},
)


def job(seed: int, **changes: object) -> ImageJob:
    fields = {"prompt": "a photo of a cat", "negative_prompt": "", "width": 64, "height": 64,
              "steps": 4, "guidance": 7.0, "sampler": "euler", "seed": seed}
    return ImageJob(**{**fields, **changes})  # type: ignore[arg-type]


def pixels(image: object) -> np.ndarray:
    return np.asarray(image)


@pytest.fixture(scope="module")
def tiny() -> ModelRunner:
    return ModelRunner.load("tiny", SPEC)


@pytest.fixture(scope="module")
def saved(tiny: ModelRunner, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusers save_pretrained copy of the builtin pipeline, under a model cache root."""
    root = tmp_path_factory.mktemp("models")
    tiny.pipeline.save_pretrained(root / "tiny-sdxl")
    return root


# --- the builtin model ---------------------------------------------------------------------------


def test_builtin_loads_on_cpu_with_a_stable_revision(tiny: ModelRunner) -> None:
    assert tiny.name == "tiny"
    assert tiny.revision == "builtin:tiny-sdxl:v2"
    assert tiny.device == "cpu"
    assert isinstance(tiny.pipeline.scheduler, SAMPLER_SCHEDULERS["euler"])


def test_builtin_weights_are_identical_on_every_build() -> None:
    before = torch.random.get_rng_state()
    a = architecture.build_sdxl_pipeline(architecture.TINY, seed=runner.BUILTIN_SEED)
    b = architecture.build_sdxl_pipeline(architecture.TINY, seed=runner.BUILTIN_SEED)
    assert torch.equal(before, torch.random.get_rng_state()), "global RNG must be left alone"
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_builtin_weights_are_identical_in_another_process(tiny: ModelRunner) -> None:
    code = ("from imagegen_worker.pipelines import architecture as a, runner as r; "
            "print(a.fingerprint(a.build_sdxl_pipeline(a.TINY, seed=r.BUILTIN_SEED)))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # tokenizer training must not depend on it
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env=env).stdout
    assert out.strip().splitlines()[-1] == architecture.fingerprint(tiny.pipeline)


def test_half_dtype_falls_back_to_float32_on_cpu(
    tiny: ModelRunner, caplog: pytest.LogCaptureFixture
) -> None:
    assert SPEC.dtype == "float16"
    assert tiny.pipeline.unet.dtype == torch.float32
    with caplog.at_level(logging.WARNING):
        assert loader.resolve_dtype("bfloat16", "cpu") == torch.float32
    assert "falling back to float32" in caplog.text
    assert loader.resolve_dtype("float16", "cuda") == torch.float16


def test_warmup_generates_once_at_default_settings(tiny: ModelRunner) -> None:
    tiny.warmup()
    assert tiny.warmed_up


def test_building_jobs_imports_no_torch() -> None:
    code = ("import sys, imagegen_worker.pipelines as p; "
            "p.batch_key(p.ImageJob('x', '', 64, 64, 1, 1.0, 'euler', 0)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- seeds and batches ---------------------------------------------------------------------------


def test_a_seed_gives_the_same_image_alone_and_inside_a_batch(tiny: ModelRunner) -> None:
    """Each image has its own generator, so its noise never depends on its batch companions.

    Pixels may still differ by one level in rare places: CPU matmuls (MKL) round differently
    when the batch dimension changes (the UNet's time-embedding Linear differs by ~2e-7 between
    2 and 6 rows), and so do GPU kernels. Same batch, same pixels, exactly.
    """
    alone = [pixels(tiny.generate([j])[0]).astype(int) for j in (job(11), job(12, prompt="a dog"))]
    batch = tiny.generate([job(10), job(11), job(12, prompt="a dog")])
    assert len(batch) == 3
    for expected, image in zip(alone, batch[1:], strict=True):
        diff = np.abs(expected - pixels(image))
        assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 1000
    again = tiny.generate([job(10), job(11), job(12, prompt="a dog")])
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(batch, again, strict=True))


def test_a_seed_draws_the_same_initial_noise_in_any_batch(tiny: ModelRunner) -> None:
    noise = tiny.pipeline.prepare_latents
    gens = runner.generators
    alone = noise(1, 4, 64, 64, torch.float32, "cpu", gens([job(11)]))
    batch = noise(3, 4, 64, 64, torch.float32, "cpu", gens([job(9), job(11), job(13)]))
    assert alone.shape == (1, 4, 8, 8)
    assert torch.equal(alone[0], batch[1])


def test_different_seeds_give_different_images(tiny: ModelRunner) -> None:
    a, b = tiny.generate([job(1), job(2)])
    assert not np.array_equal(pixels(a), pixels(b))


@pytest.mark.parametrize("sampler", list(SAMPLER_SCHEDULERS))
def test_every_sampler_runs_and_leaves_the_shared_scheduler_alone(
    tiny: ModelRunner, sampler: str
) -> None:
    shared = tiny.pipeline.scheduler
    config = dict(shared.config)
    (image,) = tiny.generate([job(3, sampler=sampler, steps=3)])
    assert image.size == (64, 64)
    assert tiny.pipeline.scheduler is shared and dict(shared.config) == config
    again = tiny.generate([job(3, sampler=sampler, steps=3)])[0]
    assert np.array_equal(pixels(image), pixels(again)), "a sampler must be deterministic"


def test_concurrent_calls_give_the_images_of_sequential_calls(tiny: ModelRunner) -> None:
    jobs = [job(5, sampler="euler_a"), job(6, sampler="dpmpp_2m"), job(7, sampler="ddim")]
    expected = [pixels(tiny.generate([j])[0]) for j in jobs]
    results: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        results[i] = pixels(tiny.generate([jobs[i]])[0])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(results[i], expected[i]) for i in range(len(jobs)))


def test_generate_refuses_jobs_with_different_batch_keys(tiny: ModelRunner) -> None:
    with pytest.raises(ValueError, match="batch_key"):
        tiny.generate([job(1), job(2, steps=5)])
    assert tiny.generate([]) == []


def test_compiled_runners_pad_batches_to_power_of_two_buckets(tiny: ModelRunner) -> None:
    padded = ModelRunner(tiny.name, tiny.pipeline, SPEC, revision=tiny.revision, device="cpu",
                         report=optimize.OptimizationReport(compiled=True))
    jobs = [job(20), job(21), job(22)]
    assert len(padded._pad_to_bucket(jobs)) == 4
    assert len(padded._pad_to_bucket(jobs[:2])) == 2
    images = padded.generate(jobs)
    assert len(images) == 3
    # Batch of 4 against batch of 1: the same image up to matmul rounding (see the test above).
    diff = np.abs(pixels(images[2]).astype(int) - pixels(tiny.generate([job(22)])[0]))
    assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 1000


# --- batch keys and tokens -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({"seed": 99}, True),
        ({"prompt": "another prompt"}, True),
        ({"negative_prompt": "blurry"}, False),  # empty vs non-empty negative differ
        ({"width": 128}, False),
        ({"height": 128}, False),
        ({"steps": 5}, False),
        ({"guidance": 5.0}, False),
        ({"sampler": "ddim"}, False),
    ],
)
def test_batch_key_groups_jobs_that_can_share_a_call(change: dict, same: bool) -> None:
    assert (batch_key(job(1)) == batch_key(replace(job(1), **change))) is same


def test_batch_key_groups_two_non_empty_negative_prompts() -> None:
    assert batch_key(job(1, negative_prompt="a")) == batch_key(job(1, negative_prompt="b"))


def test_count_tokens_counts_with_the_model_tokenizer(tiny: ModelRunner) -> None:
    assert tiny.count_tokens("") == 2  # start and end of text
    assert tiny.count_tokens("a photo of a cat") == 7
    assert tiny.count_tokens("cat " * 100) == 102  # no truncation: the limit check needs it all
    assert tiny.pipeline.tokenizer.model_max_length == tokenizer.MAX_LENGTH == 77


class SlowSettingTokenizer(tokenizer.CLIPTokenizer):  # type: ignore[misc]
    """Widens the race window: a pause between setting padding state and encoding."""

    def set_truncation_and_padding(self, *args: object, **kwargs: object) -> None:
        super().set_truncation_and_padding(*args, **kwargs)
        time.sleep(0.002)


def test_counting_while_the_pipeline_pads_prompts_gives_the_true_count() -> None:
    # A pipeline call pads prompts to 77 tokens with its tokenizer; a count sharing that
    # tokenizer object once read 77 (the chaos suite's "prompt is 77 tokens long").
    base = tokenizer.build_tokenizer()
    slow = SlowSettingTokenizer(vocab=base.get_vocab(), merges=list(tokenizer._merges()),
                                model_max_length=tokenizer.MAX_LENGTH)
    pipe = SimpleNamespace(tokenizer=slow, scheduler=SimpleNamespace(config={}))
    counting = ModelRunner("t", pipe, SPEC, revision="r", device="cpu")
    stop = threading.Event()

    def pipeline_encoding() -> None:
        while not stop.is_set():
            slow(["a cat"] * 2, padding="max_length", max_length=77, truncation=True)

    padder = threading.Thread(target=pipeline_encoding)
    padder.start()
    try:
        counts = {counting.count_tokens("a photo of a cat") for _ in range(200)}
    finally:
        stop.set()
        padder.join()
    assert counts == {7}


# --- local sources -------------------------------------------------------------------------------


def test_file_and_pvc_copies_draw_the_builtin_images(tiny: ModelRunner, saved: Path) -> None:
    by_file = ModelRunner.load("f", SPEC.model_copy(update={"source": f"file://{saved}/tiny-sdxl"}))
    by_pvc = ModelRunner.load(
        "p", SPEC.model_copy(update={"source": "pvc://models/tiny-sdxl"}), cache_dir=str(saved)
    )
    assert by_file.revision == by_pvc.revision
    assert by_file.revision.startswith("sha256:")
    expected = pixels(tiny.generate([job(42)])[0])
    for loaded in (by_file, by_pvc):
        assert np.array_equal(pixels(loaded.generate([job(42)])[0]), expected)
        assert loaded.count_tokens("a photo of a cat") == 7


def test_pvc_root_comes_from_the_environment(
    tiny: ModelRunner, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEGEN_MODEL_CACHE", str(saved))
    loaded = ModelRunner.load("p", SPEC.model_copy(update={"source": "pvc://cache/tiny-sdxl"}))
    assert loaded.revision.startswith("sha256:")


def test_a_missing_local_source_names_the_path(tmp_path: Path) -> None:
    spec = SPEC.model_copy(update={"source": "pvc://models/nope"})
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        ModelRunner.load("x", spec, cache_dir=str(tmp_path))


# --- optimizations and adapters ------------------------------------------------------------------


def test_cuda_levers_are_skipped_on_cpu_and_unavailable_ones_say_why(tiny: ModelRunner) -> None:
    assert tiny.optimizations.skipped == {"channels_last": "cuda only"}
    pipe = architecture.build_sdxl_pipeline(architecture.TINY)
    opts = Optimizations(compile=True, step_cache=True, fp8=True)
    report = optimize.apply(pipe, opts, "cpu")
    assert set(report.skipped) == {"channels_last", "compile", "step_cache", "fp8"}
    assert "torchao" in report.skipped["fp8"]
    assert not report.compiled


def test_levers_keep_images_close(tiny: ModelRunner) -> None:
    pipe = architecture.build_sdxl_pipeline(architecture.TINY, seed=runner.BUILTIN_SEED)
    opts = Optimizations(channels_last=True, fuse_qkv=True, vae_tiling=True)
    fast = ModelRunner.from_pipeline("fast", pipe, SPEC.model_copy(update={"optimizations": opts}),
                                     revision="x", device="cpu", allow_cpu_levers=True)
    assert fast.optimizations.applied == ["sdpa", "channels_last", "fuse_qkv", "vae_tiling"]
    a = pixels(fast.generate([job(8)])[0]).astype(int)
    b = pixels(tiny.generate([job(8)])[0]).astype(int)
    assert np.abs(a - b).max() <= 2


def test_step_cache_applies_to_transformer_denoisers() -> None:
    from diffusers import FluxTransformer2DModel

    flux = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    pipe = SimpleNamespace(unet=None, transformer=flux, vae=None)
    report = optimize.apply(pipe, Optimizations(step_cache=True), "cpu")
    assert "step_cache" in report.applied and flux.is_cache_enabled


def test_fused_qkv_is_skipped_with_loras() -> None:
    pipe = architecture.build_sdxl_pipeline(architecture.TINY)
    report = optimize.apply(pipe, Optimizations(fuse_qkv=True), "cuda", has_loras=True,
                            allow_cpu=True)
    assert report.skipped == {"fuse_qkv": "LoRA adapters loaded"}


def make_lora(folder: Path, *, seed: int) -> Path:
    """A LoRA made in code: peft adapters with random weights on the builtin model's UNet
    attention, saved in diffusers' LoRA format (pytorch_lora_weights.safetensors)."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = architecture.build_sdxl_pipeline(
        architecture.TINY, seed=runner.BUILTIN_SEED, dtype=torch.float32).unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = {k: v * 2.0 for k, v in
             convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)).items()}
    StableDiffusionXLPipeline.save_lora_weights(folder, unet_lora_layers=state)
    return folder / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora(tmp_path_factory.mktemp("lora"), seed=7)


def test_peft_is_installed_with_the_worker() -> None:
    assert loader.peft_available()


@pytest.mark.parametrize(("source", "root"), [("file", False), ("pvc", True)])
def test_a_lora_made_in_code_loads_and_changes_pixels(
    tiny: ModelRunner, lora_file: Path, source: str, root: bool
) -> None:
    url = (f"pvc://lora/{lora_file.name}" if root else f"file://{lora_file}")
    spec = SPEC.model_copy(update={"loras": [LoraAdapter(name="style", source=url)]})
    styled = ModelRunner.load("styled", spec, cache_dir=str(lora_file.parent) if root
                              else None)
    assert "+lora:" in styled.revision and styled.revision != tiny.revision
    base, out = pixels(tiny.generate([job(42)])[0]), pixels(styled.generate([job(42)])[0])
    assert not np.array_equal(out, base)
    assert np.abs(out.astype(int) - base.astype(int)).mean() > 1.0


def test_a_lora_at_weight_zero_draws_the_base_images(tiny: ModelRunner, lora_file: Path) -> None:
    spec = SPEC.model_copy(update={"loras": [
        LoraAdapter(name="style", source=f"file://{lora_file}", weight=0.0)]})
    muted = ModelRunner.load("muted", spec)
    assert np.array_equal(pixels(muted.generate([job(42)])[0]), pixels(tiny.generate([job(42)])[0]))


class FakeLoraPipeline:
    """Records what diffusers' LoRA API would be asked (peft is not in the image)."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str, str, dict[str, str]]] = []
        self.active: tuple[list[str], list[float]] | None = None

    def load_lora_weights(self, location: str, adapter_name: str, **options: str) -> None:
        self.loaded.append((location, adapter_name, options))

    def set_adapters(self, names: list[str], adapter_weights: list[float]) -> None:
        self.active = (names, adapter_weights)


def test_loras_load_under_their_names_and_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "peft_available", lambda: True)
    (tmp_path / "style.safetensors").write_bytes(b"style")
    folder = tmp_path / "detail"
    folder.mkdir()
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"detail")
    loras = [
        LoraAdapter(name="style", source=f"file://{tmp_path}/style.safetensors", weight=0.8),
        LoraAdapter(name="detail", source=f"file://{folder}", weight=-0.5),
    ]
    pipe = FakeLoraPipeline()
    revisions = loader.load_loras(pipe, loras)
    assert pipe.loaded == [
        (str(tmp_path), "style", {"weight_name": "style.safetensors"}),
        (str(folder), "detail", {}),
    ]
    assert pipe.active == (["style", "detail"], [0.8, -0.5])
    assert revisions[0].startswith("style=sha256:") and revisions[0].endswith("x0.8")
    assert loader.load_loras(pipe, []) == []
