"""ModelRunner: one loaded model on one device, the only object the consumer generates through.

The consumer loads each model of its pool with `ModelRunner.load` (in a thread: it is slow),
calls `warmup()` before reporting ready, then `generate(jobs)` for each batch of jobs sharing a
`batch_key`. Calls are serialised by a lock; each call runs on a shallow copy of the pipeline
with its own scheduler, so no per-call state (timesteps, guidance, step index) is ever shared.
Token counting (`count_tokens`, called from validation threads) uses a private copy of the
pipeline's tokenizer: a tokenizer is stateful (a fast one keeps its padding and truncation
settings on the shared backend), and a pipeline call pads its prompts to 77 tokens with its own,
so sharing it made a concurrent count read 77. A copy, not the lock: validation never waits on
the GPU.
Every image gets its own CPU `torch.Generator` seeded with its job's seed: a seed gives the same
initial noise on any device and in any batch, so the same image up to kernel rounding (matmuls
round differently when the batch dimension changes: at most a level on a few pixels).
ControlNets (spec.controlnets) load the first time a request names one (`prepare_controlnet`,
called from intake's validation thread, so the GPU loop keeps serving other batches meanwhile),
under their own lock, and are kept: each is a pipeline made with from_pipe around the loaded
modules.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import threading
import time
from dataclasses import replace
from typing import Any

import torch
from imagegen_api.specs import ImageModelSpec
from PIL import Image

from . import architecture, controlnet, flow, loader, optimize, samplers, sources
from .jobs import Adapters, ImageJob, batch_key

log = logging.getLogger(__name__)

# The tokenizer whose length limit matters, per family (the T5 one where a pipeline has it).
COUNTING_TOKENIZER = {"sd3": ("tokenizer_3", "tokenizer"), "flux": ("tokenizer_2", "tokenizer")}
# Tokens the text encoder reads, per family (CLIP's 77 otherwise: the tokenizer's own limit);
# the pipelines truncate longer prompts, and the validator reports that as a warning.
PROMPT_WINDOW = {"sd3": 256, "flux": 512}
BUILTIN_SEED = 20240601  # the builtin weights: same seed, same torch → identical weights


class ModelRunner:
    """A pipeline ready to serve one ImageModel."""

    name: str
    revision: str
    device: str

    def __init__(
        self,
        name: str,
        pipeline: Any,
        spec: ImageModelSpec,
        *,
        revision: str,
        device: str,
        report: optimize.OptimizationReport | None = None,
    ) -> None:
        self.name = name
        self.revision = revision
        self.device = device
        self.spec = spec
        self.pipeline = pipeline
        self.optimizations = report or optimize.OptimizationReport()
        self.warmed_up = False
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()  # guards the counting tokenizer (made on first use)
        self._counter: Any = None
        self._scheduler_config = dict(pipeline.scheduler.config)
        self._adapters: Adapters | None = None  # active on the modules; None: as loaded
        self._derived: dict[str, Any] = {}  # mode → img2img / inpaint pipeline (from_pipe)
        self._controlnets: dict[str, Any] = {}  # declared name → ControlNet pipeline
        self._controlnet_lock = threading.Lock()  # one ControlNet load at a time
        self.cache_dir: str | None = None  # where remote ControlNet weights are cached

    # --- construction --------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        name: str,
        spec: ImageModelSpec,
        *,
        device: str | None = None,
        cache_dir: str | None = None,
    ) -> ModelRunner:
        """Resolve the source, build or load the pipeline, add LoRAs, apply optimizations."""
        started = time.monotonic()
        dev = loader.resolve_device(device)
        dtype = loader.resolve_dtype(spec.dtype, dev)
        weights = sources.resolve(spec.source, cache_dir=cache_dir, revision=spec.revision,
                                  variant=loader.VARIANTS.get(spec.dtype))
        pipe: Any
        if weights.path is None:
            arch = sources.BUILTIN_MODELS[weights.source.location]
            # Built on the CPU whatever the device: identical weights everywhere, then moved.
            if isinstance(arch, flow.FlowArchitecture):
                pipe = flow.build_flow_pipeline(arch, seed=BUILTIN_SEED, dtype=dtype)
                weights_id = flow.fingerprint(pipe)
            else:
                pipe = architecture.build_sdxl_pipeline(arch, seed=BUILTIN_SEED, dtype=dtype)
                weights_id = architecture.fingerprint(pipe)
            log.info("builtin %s weights fingerprint %s", arch.name, weights_id)
        else:
            pipe = loader.load_pipeline(weights.path, spec.pipeline, dtype,
                                        variant=loader.variant_for(weights.path, spec.dtype))
        loader.check_family(pipe, spec.pipeline)
        pipe.to(dev)
        lora_revisions = loader.load_loras(pipe, list(spec.loras), cache_dir=cache_dir)
        revision = weights.revision
        if lora_revisions:
            digest = hashlib.sha256("\n".join(lora_revisions).encode()).hexdigest()[:12]
            revision = f"{revision}+lora:{digest}"
        runner = cls.from_pipeline(name, pipe, spec, revision=revision, device=dev,
                                   has_loras=bool(lora_revisions))
        runner.cache_dir = cache_dir
        log.info("model %s loaded from %s on %s (%s, revision %s) in %.1fs", name, spec.source,
                 dev, dtype, revision, time.monotonic() - started)
        return runner

    @classmethod
    def from_pipeline(
        cls,
        name: str,
        pipeline: Any,
        spec: ImageModelSpec,
        *,
        revision: str,
        device: str,
        has_loras: bool = False,
        allow_cpu_levers: bool = False,
        compile_mode: str | None = None,
    ) -> ModelRunner:
        """Wrap a pipeline already on `device` (the benchmark builds its own): optimize it."""
        pipeline.set_progress_bar_config(disable=True)
        report = optimize.apply(pipeline, spec.optimizations, device, has_loras=has_loras,
                                allow_cpu=allow_cpu_levers, compile_mode=compile_mode)
        return cls(name, pipeline, spec, revision=revision, device=device, report=report)

    # --- serving -------------------------------------------------------------------------------

    def count_tokens(self, prompt: str) -> int:
        """Tokens of `prompt` with the model's tokenizer, start and end tokens included."""
        with self._count_lock:
            if self._counter is None:
                self._counter = copy.deepcopy(self._counting_tokenizer())
            return len(self._counter(prompt, truncation=False, verbose=False)["input_ids"])

    def prompt_window(self) -> int:
        """Tokens of a prompt the text encoder reads; the pipeline drops the rest."""
        if self.spec.pipeline in PROMPT_WINDOW:
            return PROMPT_WINDOW[self.spec.pipeline]
        return int(getattr(self._counting_tokenizer(), "model_max_length", 77))

    def generate(self, jobs: list[ImageJob]) -> list[Image.Image]:
        """One pipeline call for jobs sharing a batch_key; images in the jobs' order."""
        if not jobs:
            return []
        key = batch_key(jobs[0])
        if any(batch_key(j) != key for j in jobs[1:]):
            raise ValueError("generate() needs jobs with the same batch_key")
        first = jobs[0]
        run = self._pad_to_bucket(jobs)
        size: dict[str, Any] = {"width": first.width, "height": first.height}
        extra = dict(size)
        if first.mode != "txt2img":
            extra = {"image": [j.init_image for j in run], "strength": first.strength}
        if first.mode == "inpaint":
            extra.update(mask_image=[j.mask_image for j in run], **size)
        control_pipe = None
        if first.control is not None:
            control_pipe = self.prepare_controlnet(first.control[0])  # outside the GPU lock
            extra.update(image=[j.control_image for j in run],
                         controlnet_conditioning_scale=first.control[1])
        with self._lock:
            self._use_adapters(first.loras)
            pipe = control_pipe if control_pipe is not None else self._pipeline_for(first.mode)
            if first.mode == "img2img" and _takes_size(pipe):
                extra.update(size)  # SD3's and Flux's img2img default to their native size
            # shares the modules, not the per-call state
            call = copy.copy(pipe)
            call.scheduler = samplers.fresh_scheduler(self.spec.pipeline, first.sampler,
                                                      self._scheduler_config)
            negatives = [j.negative_prompt for j in run]
            out = call(
                prompt=[j.prompt for j in run],
                negative_prompt=negatives if any(negatives) else None,
                num_inference_steps=first.steps,
                guidance_scale=first.guidance,
                generator=generators(run),
                output_type="pil",
                **extra,
            )
        images = list(out.images[: len(jobs)])
        if first.mode == "inpaint":
            # Keep the unmasked pixels exactly: the pipeline returns the whole image through the
            # VAE, which changes every pixel a little (UIs paste the original back the same way).
            images = [Image.composite(img, j.init_image, j.mask_image)
                      for img, j in zip(images, jobs, strict=True)]
        return images

    def _pipeline_for(self, mode: str) -> Any:
        """The pipeline serving `mode`: img2img and inpainting ones are made on first use with
        from_pipe (the loaded modules, no second copy of the weights) and kept."""
        if mode == "txt2img":
            return self.pipeline
        pipe = self._derived.get(mode)
        if pipe is None:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            auto = AutoPipelineForInpainting if mode == "inpaint" else AutoPipelineForImage2Image
            pipe = auto.from_pipe(self.pipeline)
            pipe.set_progress_bar_config(disable=True)
            self._derived[mode] = pipe
            log.info("model %s: %s pipeline %s made from the loaded one", self.name, mode,
                     type(pipe).__name__)
        return pipe

    def prepare_controlnet(self, name: str) -> Any:
        """The ControlNet pipeline of declared ControlNet `name`, loaded on first use and kept.
        Loading holds only the ControlNet lock: batches without it keep running."""
        with self._controlnet_lock:
            pipe = self._controlnets.get(name)
            if pipe is not None:
                return pipe
            declared = {c.name: c for c in self.spec.controlnets}
            if name not in declared:
                raise ValueError(f"model {self.name} declares no ControlNet {name!r}")
            started = time.monotonic()
            model, revision = controlnet.load(declared[name], dtype=self.pipeline.unet.dtype,
                                              device=self.device, cache_dir=self.cache_dir)
            pipe = controlnet.pipeline(self.pipeline, self.spec.pipeline, model)
            self._controlnets[name] = pipe
            log.info("model %s: ControlNet %s loaded from %s (revision %s) in %.1fs", self.name,
                     name, declared[name].source, revision, time.monotonic() - started)
            return pipe

    def loaded_controlnets(self) -> list[str]:
        """Names of the ControlNets loaded so far."""
        with self._controlnet_lock:
            return sorted(self._controlnets)

    def warmup(self) -> None:
        """One small generation at the model's default settings (compiles the default shape)."""
        d = self.spec.defaults
        job = ImageJob(prompt="warm-up", negative_prompt=d.negative_prompt, width=d.width,
                       height=d.height, steps=min(2, d.steps), guidance=d.guidance,
                       sampler=d.sampler, seed=0)
        started = time.monotonic()
        images = self.generate([job])
        if len(images) != 1:
            raise RuntimeError(f"warm-up produced {len(images)} images")
        self.warmed_up = True
        log.info("model %s warmed up in %.1fs", self.name, time.monotonic() - started)

    # --- helpers -------------------------------------------------------------------------------

    def declared_adapters(self) -> Adapters:
        """The model's adapters at their declared weights (a request without `loras`)."""
        return tuple(sorted((a.name, float(a.weight)) for a in self.spec.loras if a.weight))

    def _use_adapters(self, wanted: Adapters | None) -> None:
        """Switch the adapters set on the shared modules (under the lock) when a batch asks
        for another set: set_adapters changes weights only, the base is never reloaded."""
        if not self.spec.loras:
            if wanted:
                raise ValueError(f"model {self.name} declares no LoRA adapters")
            return
        if wanted is None:
            wanted = self.declared_adapters()
        if wanted == self._adapters:
            return
        if not wanted:
            self.pipeline.disable_lora()  # skips the adapters' matmuls: exactly the base
        else:
            if self._adapters == ():
                self.pipeline.enable_lora()
            self.pipeline.set_adapters([n for n, _ in wanted],
                                       adapter_weights=[w for _, w in wanted])
        self._adapters = wanted

    def _pad_to_bucket(self, jobs: list[ImageJob]) -> list[ImageJob]:
        """With a compiled denoiser, pad to a power-of-two batch so few shapes ever compile."""
        if not self.optimizations.compiled:
            return jobs
        bucket = 1 << (len(jobs) - 1).bit_length()
        return jobs + [replace(jobs[-1], prompt="", seed=0)] * (bucket - len(jobs))

    def _counting_tokenizer(self) -> Any:
        for attr in COUNTING_TOKENIZER.get(self.spec.pipeline, ("tokenizer", "tokenizer_2")):
            tok = getattr(self.pipeline, attr, None)
            if tok is not None:
                return tok
        raise RuntimeError(f"{type(self.pipeline).__name__} has no tokenizer")


def _takes_size(pipe: Any) -> bool:
    """Whether the pipeline's call takes width and height (SDXL's img2img takes the image's)."""
    params = inspect.signature(type(pipe).__call__).parameters
    return "width" in params and "height" in params


def generators(jobs: list[ImageJob]) -> list[torch.Generator]:
    """One CPU generator per image, seeded with its job's seed (same noise on any device)."""
    return [torch.Generator("cpu").manual_seed(j.seed) for j in jobs]
