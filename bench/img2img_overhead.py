"""img2img / inpainting overhead vs text-to-image at the same steps, on builtin://tiny-sdxl.

    .venv/bin/python -m bench.img2img_overhead [--size 128] [--steps 8] [--repeats 5]

Each mode runs `steps` denoising steps (strength 1.0: img2img skips none), so the difference is
what the mode adds: preprocessing and the VAE encode of the init image (and the mask blend for
inpainting). Median wall time per image, ms, printed in the same run for all three.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from imagegen_api.specs import ImageModelSpec
from imagegen_worker.pipelines import ImageJob, ModelRunner
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    runner = ModelRunner.load("tiny", ImageModelSpec(source="builtin://tiny-sdxl"))
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (a.size, a.size, 3), np.uint8), "RGB")
    mask = Image.new("L", (a.size, a.size), 0)
    mask.paste(255, (a.size // 4, a.size // 4, 3 * a.size // 4, 3 * a.size // 4))
    base = {"prompt": "a cat", "negative_prompt": "", "width": a.size, "height": a.size,
            "steps": a.steps, "guidance": 5.0, "sampler": "euler", "seed": 1}
    modes = {"txt2img": {}, "img2img": {"init_image": init, "strength": 1.0},
             "inpaint": {"init_image": init, "mask_image": mask, "strength": 1.0}}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for kw in modes.values():  # first call: builds the from_pipe pipeline, not timed
        runner.generate([ImageJob(**base, **kw)])  # type: ignore[arg-type]
    for _ in range(a.repeats):
        for m, kw in modes.items():  # interleaved: contention hits all modes alike
            t0 = time.perf_counter()
            runner.generate([ImageJob(**base, **kw)])  # type: ignore[arg-type]
            times[m].append((time.perf_counter() - t0) * 1000)
    t2i = statistics.median(times["txt2img"])
    print(f"tiny-sdxl {a.size}x{a.size}, {a.steps} steps, {a.repeats} repeats, CPU")
    for m, ts in times.items():
        med = statistics.median(ts)
        print(f"{m:8s} median {med:8.1f} ms  overhead vs txt2img {med - t2i:+7.1f} ms "
              f"({(med / t2i - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
