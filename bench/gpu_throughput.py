"""GPU throughput of SDXL generation: vanilla diffusers against the worker's own path (issue #7).

Builds the real SDXL base 1.0 architecture from its configs with random weights (no download),
then, in one process on one device, measures:

- vanilla: `StableDiffusionXLPipeline.__call__` in eager fp16 with diffusers' defaults;
- worker: `ModelRunner.generate`, the exact code a worker serves requests with (fresh scheduler,
  one generator per image, compile buckets), after `optimize.apply` with the chosen levers.

For each batch size it reports seconds per image, the speed-up over vanilla, the fraction of the
FLOP floor reached (≈416 TFLOP per 1024² image at 30 CFG steps; 800 TFLOP/s → 0.52 s/image),
peak GPU memory and the first call's time (warm-up, compilation included). Each `--levers`
option adds one worker configuration, so levers can be measured alone and together:

    python bench/gpu_throughput.py --levers none --levers channels_last \\
        --levers channels_last,fuse_qkv --levers channels_last,compile --out out/bench.json

`--tiny` runs the same harness on the tiny model (CPU is fine) to check the harness itself.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import torch
from imagegen_api.specs import ImageModelSpec, Optimizations
from imagegen_worker.pipelines import ImageJob, ModelRunner, architecture

PROMPT = "a photo of an astronaut riding a horse on mars, highly detailed"
LEVERS = ("compile", "channels_last", "fuse_qkv", "vae_tiling", "bf16")
# FLOP model at 1024² (anchors): one CFG UNet step 13.5 TFLOP, VAE decode 10.5 TFLOP.
UNET_CFG_STEP_TFLOP = 13.5
VAE_DECODE_TFLOP = 10.5
SUSTAINED_TFLOPS = 800.0  # bf16 matmul rate an H100 sustains


@dataclass
class Row:
    config: str
    batch: int
    dtype: str
    seconds_per_call: list[float] = field(default_factory=list)
    s_per_image: float | None = None
    speedup_vs_vanilla: float | None = None
    floor_fraction: float | None = None
    peak_memory_gib: float | None = None
    first_call_s: float | None = None
    error: str | None = None


def flop_floor_s(size: int, steps: int, guidance: float) -> float:
    """Seconds per image at SUSTAINED_TFLOPS (pixels scale linearly: approximate off 1024²)."""
    unet = UNET_CFG_STEP_TFLOP * (1.0 if guidance > 1 else 0.5)
    return (unet * steps + VAE_DECODE_TFLOP) * (size * size) / 1024**2 / SUSTAINED_TFLOPS


def parse_levers(text: str) -> tuple[str, ...]:
    names = tuple(sorted({n.strip() for n in text.split(",") if n.strip()} - {"none"}))
    unknown = set(names) - set(LEVERS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown levers {sorted(unknown)} (known: {LEVERS})")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny SDXL (checks the harness, CPU ok)")
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    p.add_argument("--size", type=int, default=None, help="image side (1024; tiny: 64)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (30; tiny: 4)")
    p.add_argument("--guidance", type=float, default=7.0, help="CFG scale (>1: two UNet passes)")
    p.add_argument("--batches", default=None, help="comma list (1,2,4,8; tiny: 1,2)")
    p.add_argument("--levers", action="append", type=parse_levers, default=None,
                   help=f"one worker config: comma list of {', '.join(LEVERS)} or none "
                        "(repeat for more configs; default: channels_last,compile)")
    p.add_argument("--no-vanilla", action="store_true", help="skip the vanilla baseline")
    p.add_argument("--baseline", type=Path, default=None,
                   help="results JSON of an earlier run: its vanilla rows give the speed-ups")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per batch after warm-up")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (worker default)")
    p.add_argument("--out", type=Path, default=None, help="write JSON results here")
    args = p.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not args.tiny and not args.device.startswith("cuda"):
        p.error("the full SDXL needs a GPU: use --tiny to check the harness on a CPU")
    args.size = args.size or (64 if args.tiny else 1024)
    args.steps = args.steps or (4 if args.tiny else 30)
    batches = args.batches or ("1,2" if args.tiny else "1,2,4,8")
    args.batches = [int(b) for b in batches.split(",")]
    args.levers = args.levers or [("channels_last", "compile")]
    return args


def build(args: argparse.Namespace, dtype: torch.dtype) -> Any:
    arch = architecture.TINY if args.tiny else architecture.SDXL_BASE
    pipe = architecture.build_sdxl_pipeline(arch, seed=0, device=args.device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def vanilla_call(pipe: Any, args: argparse.Namespace) -> Any:
    def call(batch: int) -> None:
        pipe(prompt=[PROMPT] * batch, height=args.size, width=args.size,
             num_inference_steps=args.steps, guidance_scale=args.guidance,
             generator=torch.Generator(args.device).manual_seed(0))
    return call


def worker_runner(pipe: Any, levers: tuple[str, ...], args: argparse.Namespace) -> ModelRunner:
    opts = Optimizations(compile="compile" in levers, channels_last="channels_last" in levers,
                         fuse_qkv="fuse_qkv" in levers, vae_tiling="vae_tiling" in levers)
    spec = ImageModelSpec(
        source="file:///bench/random-sdxl",
        dtype="bfloat16" if "bf16" in levers else "float16",
        defaults={"width": args.size, "height": args.size, "steps": args.steps,
                  "guidance": args.guidance},
        limits={"max_pixels": max(args.size * args.size, 64 * 64)},
        optimizations=opts,
    )
    return ModelRunner.from_pipeline("bench", pipe, spec, revision="random", device=args.device,
                                     allow_cpu_levers=not args.device.startswith("cuda"),
                                     compile_mode=args.compile_mode)


def worker_call(runner: ModelRunner, args: argparse.Namespace) -> Any:
    def call(batch: int) -> None:
        jobs = [ImageJob(PROMPT, "", args.size, args.size, args.steps, args.guidance, "euler", i)
                for i in range(batch)]
        runner.generate(jobs)
    return call


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(
    config: str,
    dtype: str,
    call: Any,
    args: argparse.Namespace,
    baseline: dict[int, float],
    floor: float | None,
) -> list[Row]:
    """Warm-up call, then `repeats` timed calls per batch size; one row per batch size."""
    rows = []
    for batch in args.batches:
        row = Row(config=config, batch=batch, dtype=dtype)
        cuda = args.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            sync(args.device)
            start = time.perf_counter()
            call(batch)  # warm-up: compiles this shape when compile is on
            sync(args.device)
            row.first_call_s = time.perf_counter() - start
            for _ in range(args.repeats):
                start = time.perf_counter()
                call(batch)
                sync(args.device)
                row.seconds_per_call.append(time.perf_counter() - start)
            timed = row.seconds_per_call or [row.first_call_s]
            row.s_per_image = min(timed) / batch
            if batch in baseline:
                row.speedup_vs_vanilla = baseline[batch] / row.s_per_image
            if floor is not None:
                row.floor_fraction = floor / row.s_per_image
        except torch.OutOfMemoryError as err:
            row.error = f"out of memory: {str(err).splitlines()[0]}"
            gc.collect()
            torch.cuda.empty_cache()
        if cuda:
            row.peak_memory_gib = torch.cuda.max_memory_allocated() / 2**30
        rows.append(row)
        print_row(row)
    return rows


NAME_WIDTH = 44


def print_header() -> None:
    print(f"{'config':<{NAME_WIDTH}}{'batch':>6}{'s/image':>10}{'speedup':>9}{'floor':>8}"
          f"{'peak GiB':>10}{'1st call s':>12}", flush=True)


def print_row(row: Row) -> None:
    def fmt(value: float | None, width: int, spec: str) -> str:
        return f"{'-' if value is None else format(value, spec):>{width}}"

    if row.error:
        print(f"{row.config:<{NAME_WIDTH}}{row.batch:>6}  {row.error}", flush=True)
        return
    print(f"{row.config:<{NAME_WIDTH}}{row.batch:>6}{fmt(row.s_per_image, 10, '.3f')}"
          f"{fmt(row.speedup_vs_vanilla, 9, '.2f')}{fmt(row.floor_fraction, 8, '.1%')}"
          f"{fmt(row.peak_memory_gib, 10, '.1f')}{fmt(row.first_call_s, 12, '.1f')}", flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    floor = None if args.tiny else flop_floor_s(args.size, args.steps, args.guidance)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda")
        else platform.processor() or "cpu",
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "model": "tiny-sdxl" if args.tiny else "sdxl-base-1.0 (random weights)",
        "size": args.size, "steps": args.steps, "guidance": args.guidance,
        "batches": args.batches, "flop_floor_s_per_image": floor,
        "configs": {}, "rows": [],
    }
    print(f"{result['model']} on {result['device']}: {args.size}², {args.steps} steps, "
          f"guidance {args.guidance}, torch {torch.__version__}, diffusers "
          f"{diffusers.__version__}; FLOP floor "
          f"{'n/a' if floor is None else f'{floor:.2f} s/image'}", flush=True)
    print_header()
    baseline = earlier_baseline(args) if args.baseline else {}
    if not args.no_vanilla:
        started = time.perf_counter()
        pipe = build(args, torch.float16 if args.device.startswith("cuda") else torch.float32)
        result["configs"]["vanilla"] = {"build_s": time.perf_counter() - started}
        rows = measure("vanilla (eager, defaults)", str(pipe.unet.dtype),
                       vanilla_call(pipe, args), args, {}, floor)
        baseline = {r.batch: r.s_per_image for r in rows if r.s_per_image}
        save(rows, result, args)
        del pipe
        release()
    for levers in args.levers:
        name = "worker " + (",".join(levers) or "none")
        dtype = torch.bfloat16 if "bf16" in levers else torch.float16
        if not args.device.startswith("cuda"):
            dtype = torch.float32
        started = time.perf_counter()
        pipe = build(args, dtype)
        runner = worker_runner(pipe, levers, args)
        result["configs"][name] = {"build_s": time.perf_counter() - started,
                                   "applied": runner.optimizations.applied,
                                   "skipped": runner.optimizations.skipped}
        rows = measure(name, str(dtype), worker_call(runner, args), args, baseline, floor)
        save(rows, result, args)
        del pipe, runner
        release()
    return result


def earlier_baseline(args: argparse.Namespace) -> dict[int, float]:
    """Vanilla seconds per image by batch from an earlier run with the same settings."""
    earlier = json.loads(args.baseline.read_text())
    same = all(earlier.get(k) == getattr(args, k) for k in ("size", "steps", "guidance"))
    if not same:
        raise SystemExit(f"{args.baseline}: size, steps or guidance differ from this run")
    return {r["batch"]: r["s_per_image"] for r in earlier["rows"]
            if r["config"].startswith("vanilla") and r["s_per_image"]}


def save(rows: list[Row], result: dict[str, Any], args: argparse.Namespace) -> None:
    """Add the rows; rewrite --out after every configuration so a cut-short run keeps them."""
    result["rows"] += [asdict(row) for row in rows]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


def release() -> None:
    """Free the last configuration's GPU memory and compiled graphs before the next one."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Random weights overflow fp16 somewhere: NaN pixels are expected and cost nothing extra.
    warnings.filterwarnings("ignore", message="invalid value encountered in cast")
    result = run(args)
    print_summary(result)
    if args.out:
        print(f"results: {args.out}")
    return 0


def print_summary(result: dict[str, Any]) -> None:
    print("\nconfigurations:")
    for name, info in result["configs"].items():
        extra = ""
        if "applied" in info:
            skipped = ", ".join(f"{k}: {v}" for k, v in info["skipped"].items())
            extra = f"; applied {', '.join(info['applied'])}" + (f"; skipped {skipped}"
                                                                  if skipped else "")
        print(f"  {name}: built in {info['build_s']:.1f}s{extra}")


if __name__ == "__main__":
    sys.exit(main())
