"""ControlNet overhead vs text-to-image at the same steps, on builtin://tiny-sdxl with
builtin://tiny-controlnet-sdxl.

    .venv/bin/python -m bench.controlnet_overhead [--size 128] [--steps 8] [--repeats 5]

Both modes run `steps` denoising steps; the ControlNet mode adds, per step, one ControlNet
forward pass (for the cond and uncond halves, as the UNet) and, once, the control image's
preprocessing. Median wall time per image, ms, both in the same run (interleaved); the
ControlNet's load (first use) is timed once on its own and not in the medians.
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
    spec = ImageModelSpec(source="builtin://tiny-sdxl", controlnets=[
        {"name": "edges", "source": "builtin://tiny-controlnet-sdxl"}])
    runner = ModelRunner.load("tiny", spec)
    yy, xx = np.indices((a.size, a.size))
    cells = ((xx // 8 + yy // 8) % 2 * 255).astype(np.uint8)
    control = Image.fromarray(np.stack([cells] * 3, axis=-1), "RGB")
    base = {"prompt": "a cat", "negative_prompt": "", "width": a.size, "height": a.size,
            "steps": a.steps, "guidance": 5.0, "sampler": "euler", "seed": 1}
    modes = {"txt2img": {}, "controlnet": {"control": ("edges", 1.0, "board"),
                                           "control_image": control}}
    t0 = time.perf_counter()
    runner.prepare_controlnet("edges")
    load_ms = (time.perf_counter() - t0) * 1000
    for kw in modes.values():  # first call per mode: not timed
        runner.generate([ImageJob(**base, **kw)])  # type: ignore[arg-type]
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(a.repeats):
        for m, kw in modes.items():  # interleaved: contention hits both modes alike
            t0 = time.perf_counter()
            runner.generate([ImageJob(**base, **kw)])  # type: ignore[arg-type]
            times[m].append((time.perf_counter() - t0) * 1000)
    t2i = statistics.median(times["txt2img"])
    print(f"tiny-sdxl {a.size}x{a.size}, {a.steps} steps, {a.repeats} repeats, CPU; "
          f"ControlNet load (first use) {load_ms:.0f} ms")
    for m, ts in times.items():
        med = statistics.median(ts)
        print(f"{m:10s} median {med:8.1f} ms  overhead vs txt2img {med - t2i:+7.1f} ms "
              f"({(med / t2i - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
