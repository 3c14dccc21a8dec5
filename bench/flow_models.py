"""CPU time per image of each built-in tiny family: builtin://tiny-sdxl, tiny-sd3, tiny-flux.

    .venv/bin/python -m bench.flow_models [--sizes 64,256] [--steps 4] [--repeats 5]

For each model: the build time (random weights in code, `ModelRunner.load`), then per size the
median wall time of one image at `steps` steps with the family's default sampler (euler), the
models interleaved per repeat so CPU contention hits all alike. The first call per size is not
timed (it builds the per-shape state: attention processors, rotary tables).
"""

from __future__ import annotations

import argparse
import statistics
import time

from imagegen_api.families import BUILTIN_FAMILIES
from imagegen_api.specs import ImageModelSpec
from imagegen_worker.pipelines import ImageJob, ModelRunner

MODELS = ("tiny-sdxl", "tiny-sd3", "tiny-flux")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    runners, built = {}, {}
    for name in MODELS:
        t0 = time.perf_counter()
        runners[name] = ModelRunner.load(name, ImageModelSpec(
            source=f"builtin://{name}", pipeline=BUILTIN_FAMILIES[name]))  # type: ignore[arg-type]
        built[name] = time.perf_counter() - t0

    def job(size: int) -> ImageJob:
        return ImageJob(prompt="a lighthouse at dawn", negative_prompt="", width=size,
                        height=size, steps=a.steps, guidance=3.5, sampler="euler", seed=1)

    for runner in runners.values():
        for size in sizes:
            runner.generate([job(size)])
    times: dict[tuple[str, int], list[float]] = {(m, s): [] for m in MODELS for s in sizes}
    for _ in range(a.repeats):
        for size in sizes:
            for name, runner in runners.items():
                t0 = time.perf_counter()
                runner.generate([job(size)])
                times[(name, size)].append((time.perf_counter() - t0) * 1000)
    print(f"{a.steps} steps, euler, {a.repeats} repeats, CPU; median ms per image")
    print(f"{'model':10s} {'build s':>8s} " + " ".join(f"{f'{s}x{s}':>10s}" for s in sizes))
    for name in MODELS:
        cells = " ".join(f"{statistics.median(times[(name, s)]):10.0f}" for s in sizes)
        print(f"{name:10s} {built[name]:8.2f} {cells}")


if __name__ == "__main__":
    main()
