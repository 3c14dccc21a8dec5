"""Benchmark (not a test): what switching LoRA adapters between batches costs.

Loads builtin://tiny-sdxl (CPU unless a GPU is there) with two adapters made in code (the unit
tests' helper: peft on the UNet's attention, rank 4, diffusers LoRA format), then, in one run:

  switch      ModelRunner._use_adapters alone, alternating {style} and {ink} (set_adapters:
              weights only, the base is never reloaded), and {style} <-> none (disable/enable)
  same        batches that all use {style}: no switch
  alternating batches alternating {style} and {ink}: a switch before each
  cost        alternating - same, per batch (the switch as the worker pays it)

Usage: .venv/bin/python bench/lora_switch.py [--batches 20] [--size 64] [--steps 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imagegen_api.specs import ImageModelSpec, LoraAdapter
from imagegen_worker.pipelines import ImageJob, ModelRunner

from tests.unit.worker.test_pipelines import make_lora

STYLE, INK, NONE = (("style", 1.0),), (("ink", 1.0),), ()


def timed_ms(fn: object, *args: object) -> float:
    started = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        style = make_lora(Path(tmp, "style"), seed=7)
        ink = make_lora(Path(tmp, "ink"), seed=11)
        spec = ImageModelSpec(
            source="builtin://tiny-sdxl",
            defaults={"width": args.size, "height": args.size, "steps": args.steps},
            loras=[LoraAdapter(name="style", source=f"file://{style}"),
                   LoraAdapter(name="ink", source=f"file://{ink}")])
        started = time.perf_counter()
        runner = ModelRunner.load("bench", spec)
        load_s = time.perf_counter() - started

    def job(loras: tuple[tuple[str, float], ...]) -> ImageJob:
        return ImageJob(prompt="a photo of a cat", negative_prompt="", width=args.size,
                        height=args.size, steps=args.steps, guidance=5.0, sampler="euler",
                        seed=1, loras=loras)

    def batch(loras: tuple[tuple[str, float], ...]) -> None:
        runner.generate([job(loras)])

    for sets in (STYLE, INK, NONE, STYLE):  # warm every path once
        batch(sets)
    n = args.batches
    switch = [timed_ms(runner._use_adapters, (STYLE, INK)[i % 2]) for i in range(n * 5)]
    toggle = [timed_ms(runner._use_adapters, (STYLE, NONE)[i % 2]) for i in range(n * 5)]
    # Interleaved rounds so drift on a shared machine hits both series alike.
    same: list[float] = []
    alternating: list[float] = []
    for _ in range(n):
        runner._use_adapters(STYLE)
        same.append(timed_ms(batch, STYLE))
        same.append(timed_ms(batch, STYLE))
        alternating.append(timed_ms(batch, INK))
        alternating.append(timed_ms(batch, STYLE))
    figures = {
        "device": runner.device, "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "size": args.size, "steps": args.steps,
        "batches": 2 * n, "load_s": round(load_s, 2),
        "switch_ms_median": round(statistics.median(switch), 3),
        "switch_ms_p90": round(statistics.quantiles(switch, n=10)[-1], 3),
        "disable_enable_ms_median": round(statistics.median(toggle), 3),
        "batch_same_ms_median": round(statistics.median(same), 2),
        "batch_alternating_ms_median": round(statistics.median(alternating), 2),
        "switch_cost_per_batch_ms": round(statistics.median(alternating)
                                          - statistics.median(same), 2),
    }
    if args.json:
        print(json.dumps(figures))
        return
    for k, v in figures.items():
        print(f"{k:30} {v}")


if __name__ == "__main__":
    main()
