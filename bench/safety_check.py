"""Per-image cost of the post-generation safety check (spec.safety.checker).

    .venv/bin/python -m bench.safety_check [--repeats 7] [--diffusers] [--device cpu]
                                           [--threads 1]

`--threads` sets torch's CPU threads (default 1, as the integration harness runs its workers):
on a busy 2-core machine, 2 OpenMP threads made the same small convolution 10x slower.

1. Generation with and without the check, as the worker's GPU half runs it (batchrun: the
   pipeline, then the checker on the whole batch): builtin://tiny-sdxl at 64x64, 2 steps,
   batches of 1 and 4, builtin://redness; median (and fastest) ms per image of each,
   interleaved so contention hits both alike.
2. The checker alone, ms per image at 64, 512 and 1024 px (the diffusers checker at 512 px:
   it resizes every image to 224 px first), batches of 1 and 4: the redness classifier and,
   with --diffusers, diffusers' StableDiffusionSafetyChecker at its real size
   (CLIP ViT-L/14 at 224 px, the architecture of CompVis/stable-diffusion-safety-checker, random
   weights: the same arithmetic as the published checker, without downloading it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from imagegen_api.specs import ImageModelSpec, SafetyCheckerSpec
from imagegen_worker.pipelines import ImageJob, ModelRunner
from imagegen_worker.safety import SafetyChecker
from PIL import Image


def timed_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, fastest) ms of `repeats` calls: on a shared CPU the fastest is the cost, the
    median adds what the neighbours took."""
    fn()  # first call: allocations, lazy init; not timed
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times)


def pictures(size: int, n: int) -> list[Image.Image]:
    rng = np.random.default_rng(size)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8), "RGB")
            for _ in range(n)]


def diffusers_checker(folder: Path, device: str) -> SafetyChecker:
    """A StableDiffusionSafetyChecker shaped as the published one (ViT-L/14, projection 768),
    random weights, saved and loaded through the worker's loader (file:// source)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        vision_config={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                       "num_attention_heads": 16, "patch_size": 14, "image_size": 224},
        projection_dim=768)
    StableDiffusionSafetyChecker(config).save_pretrained(folder / "safety_checker")
    CLIPImageProcessor(size={"shortest_edge": 224},
                       crop_size={"height": 224, "width": 224}).save_pretrained(
        folder / "feature_extractor")
    return SafetyChecker.load(SafetyCheckerSpec(source=f"file://{folder}"), device=device,
                              cache_dir=None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--diffusers", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    redness = SafetyChecker.load(SafetyCheckerSpec(source="builtin://redness"),
                                 device=a.device, cache_dir=None)

    runner = ModelRunner.load("tiny", ImageModelSpec(source="builtin://tiny-sdxl"),
                              device=a.device)
    print(f"1. tiny-sdxl 64x64, 2 steps, {a.device}, {a.threads} thread(s): ms/image, "
          f"median of {a.repeats}")
    print(f"{'batch':>5} {'generate':>9} {'+ check':>9} {'added':>7}")
    for batch in (1, 4):
        jobs = [ImageJob(prompt="a cat", negative_prompt="", width=64, height=64, steps=2,
                         guidance=5.0, sampler="euler", seed=i) for i in range(batch)]
        plain: list[float] = []
        checked: list[float] = []
        runner.generate(jobs)
        for _ in range(a.repeats):  # interleaved
            t0 = time.perf_counter()
            runner.generate(jobs)
            plain.append((time.perf_counter() - t0) * 1000 / batch)
            t0 = time.perf_counter()
            redness.check(runner.generate(jobs))
            checked.append((time.perf_counter() - t0) * 1000 / batch)
        p, c = statistics.median(plain), statistics.median(checked)
        print(f"{batch:5d} {p:9.2f} {c:9.2f} {c - p:+7.2f}   fastest {min(plain):.2f} / "
              f"{min(checked):.2f} ({min(checked) - min(plain):+.2f})")

    checkers = {"redness": redness}
    with tempfile.TemporaryDirectory() as tmp:
        if a.diffusers:
            checkers["sd-checker"] = diffusers_checker(Path(tmp), a.device)
        print(f"2. the checker alone, {a.device}, {a.threads} thread(s): ms/image, "
              f"median of {a.repeats}")
        print(f"{'checker':>10} {'size':>9} {'batch 1 median/min':>19} "
              f"{'batch 4 median/min':>19}")
        for name, checker in checkers.items():
            # The diffusers checker resizes every image to 224 px first: one size tells it all.
            for size in (64, 512, 1024) if name == "redness" else (512,):
                imgs = pictures(size, 4)
                one = timed_ms(lambda c=checker, i=imgs: c.check(i[:1]), a.repeats)
                four = timed_ms(lambda c=checker, i=imgs: c.check(i), a.repeats)
                print(f"{name:>10} {size:>4}x{size:<4} {one[0]:10.2f}/{one[1]:<8.2f} "
                      f"{four[0] / 4:10.2f}/{four[1] / 4:<8.2f}")


if __name__ == "__main__":
    main()
