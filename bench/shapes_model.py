"""Benchmark (not a test): builtin://shapes-sdxl, the tiny SDXL trained in code on shapes.

Prints three figures, on the CPU, in-process (no stack needed):

  training    wall and CPU seconds the cached model took to train on this machine, and how
              busy the machine was (load average), from the record saved beside the weights;
              `--retrain` trains a fresh copy into a temporary cache and times that instead.
  accuracy    over N generations (random caption from the dataset, seed i, 20 Euler steps,
              guidance 5, 64x64): how often the foreground and background colours read back
              from the pixels are the prompt's (shapes_measure: within 60 of the named colour),
              and how often the shape is also right (shapes_measure.shape_of, which reads
              100% of the training pictures right). Also for builtin://tiny-sdxl, as the floor.
  speed       images/s of the pipeline (ModelRunner.generate) at batch 1 and batch 4.

Usage: .venv/bin/python bench/shapes_model.py [--images 100] [--threads 2] [--retrain] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from imagegen_api.specs import ImageModelSpec
from imagegen_worker.pipelines import ImageJob, ModelRunner, shapes_data, shapes_measure
from imagegen_worker.pipelines import shapes_train as st

STEPS, GUIDANCE = 20, 5.0


def job(prompt: str, seed: int) -> ImageJob:
    return ImageJob(prompt=prompt, negative_prompt="", width=64, height=64, steps=STEPS,
                    guidance=GUIDANCE, sampler="euler", seed=seed)


def accuracy(runner: ModelRunner, n: int) -> dict[str, Any]:
    """Colour and shape accuracy over `n` generations of random dataset captions."""
    rng = np.random.default_rng(2026)
    colour = shape = 0
    confusions: dict[str, int] = {}
    for i in range(n):
        scene = shapes_data.scene(rng)
        image = runner.generate([job(scene.caption, seed=i)])[0]
        reading = shapes_measure.read(image)
        ok = reading.matches(color=scene.color, background=scene.background)
        colour += ok
        shape += ok and reading.shape == scene.shape
        if not ok:
            seen = f"{reading.foreground_name} on {reading.background_name}"
            key = f"{scene.color} on {scene.background} -> {seen}"
            confusions[key] = confusions.get(key, 0) + 1
    return {"images": n, "colour_accuracy": colour / n, "colour_and_shape_accuracy": shape / n,
            "misses": dict(sorted(confusions.items(), key=lambda kv: -kv[1])[:8])}


def speed(runner: ModelRunner, batch: int, rounds: int = 5) -> float:
    """Images per second of the pipeline at `batch` (after one warm-up call)."""
    jobs = [job("a red circle on a blue background", seed=s) for s in range(batch)]
    runner.generate(jobs)
    started = time.perf_counter()
    for _ in range(rounds):
        runner.generate(jobs)
    return batch * rounds / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--retrain", action="store_true",
                        help="train a fresh copy in a temporary cache and time it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root: Path | None = None
    if args.retrain:
        root = Path(tempfile.mkdtemp(prefix="shapes-bench-"))
    folder = st.ensure(root, log=lambda line: print(f"  [train] {line}", file=sys.stderr))
    record = json.loads((folder / st.TRAINING_RECORD).read_text())
    if root:
        os.environ["IMAGEGEN_CACHE"] = str(root)  # where builtin://shapes-sdxl resolves
    shapes = ModelRunner.load("shapes", ImageModelSpec(source="builtin://shapes-sdxl"),
                              device="cpu")
    tiny = ModelRunner.load("tiny", ImageModelSpec(source="builtin://tiny-sdxl"), device="cpu")

    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"torch {torch.__version__}, {args.threads} threads",
        "training": {k: record[k] for k in ("wall_seconds", "cpu_seconds", "cpus",
                                            "load_average_before", "load_average_after")},
        "shapes_sdxl": accuracy(shapes, args.images),
        "tiny_sdxl": accuracy(tiny, min(args.images, 30)),
        "images_per_second": {f"batch {b}": round(speed(shapes, b), 2) for b in (1, 4)},
        "load_average_now": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    t = figures["training"]
    print(f"machine: {figures['machine']}")
    print(f"training: {t['wall_seconds']:.0f} s wall, {t['cpu_seconds']:.0f} s CPU "
          f"(load average {t['load_average_before']:.1f} before, "
          f"{t['load_average_after']:.1f} after, {t['cpus']} CPUs)")
    for name in ("shapes_sdxl", "tiny_sdxl"):
        a = figures[name]
        print(f"{name}: colours right {a['colour_accuracy']:.0%}, colours and shape right "
              f"{a['colour_and_shape_accuracy']:.0%} over {a['images']} images "
              f"({STEPS} steps, guidance {GUIDANCE:g})")
        for miss, count in a["misses"].items():
            print(f"    {count} x {miss}")
    speeds = figures["images_per_second"]
    print("images/s (64x64, 20 steps, CPU): " + ", ".join(f"{k}: {v}" for k, v in speeds.items())
          + f" (load average now {figures['load_average_now']:.1f})")


if __name__ == "__main__":
    main()
