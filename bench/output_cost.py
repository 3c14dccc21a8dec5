"""Cost per image of the watermark and the provenance metadata vs a plain encode (same run).

Usage: .venv/bin/python -m bench.output_cost [repeats]
"""

from __future__ import annotations

import functools
import sys
import time

import numpy as np
from imagegen_worker import encode
from PIL import Image

PARAMS = {"prompt": "a fox", "seed": 1, "model": "sdxl", "model_revision": "r", "steps": 20,
          "sampler": "euler", "guidance": 6.0, "request_id": "bench-1"}


def ms(fn: object, repeats: int) -> float:
    fn()  # type: ignore[operator]  # warm-up (first encoder and codec use)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000 / repeats


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    rng = np.random.default_rng(0)
    for size in (512, 1024):
        img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB")
        for fmt in ("png", "webp", "jpeg"):
            run = functools.partial(encode.encode, img, fmt, PARAMS)
            plain = ms(functools.partial(run, mark=False, embed=False), repeats)
            meta = ms(functools.partial(run, mark=False), repeats)
            full = ms(run, repeats)
            print(f"{size}x{size} {fmt:5} plain {plain:7.1f} ms  +metadata {meta - plain:+6.1f} ms"
                  f"  +watermark+metadata {full - plain:+7.1f} ms")


if __name__ == "__main__":
    main()
