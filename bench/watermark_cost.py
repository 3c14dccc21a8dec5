"""Watermark + provenance cost per image: plain encode vs metadata vs watermark+metadata vs
all of it signed with Content Credentials (a C2PA manifest, ES256).

    .venv/bin/python -m bench.watermark_cost [--repeat 5]

Times encode.encode on a smooth test image at 512x512 and 1024x1024 for png, webp and jpeg
(quality 90) in one run: embed=False/mark=False (plain), metadata only, watermark + metadata,
and watermark + metadata + C2PA signature (a throwaway key, dev/localstack/signing.py). Prints
the median ms of each, the added cost, the signature alone (`sign`, on the encoded bytes) and
the bytes the signed manifest adds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from imagegen_worker import encode
from imagegen_worker.content_credentials import ContentCredentials
from PIL import Image, ImageFilter

from dev.localstack import signing

PARAMS = {"prompt": "a fox in snow", "negative_prompt": "", "steps": 20, "guidance": 6.5,
          "sampler": "euler", "seed": 1, "model": "sdxl", "model_revision": "r",
          "request_id": "bench-1", "adapters": None}


def picture(size: int) -> Image.Image:
    small = np.random.default_rng(size).integers(30, 225, (size // 32, size // 32, 3),
                                                  dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((size, size)).filter(ImageFilter.GaussianBlur(2))


def median_ms(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as keys:
        credentials = ContentCredentials.load(signing.make_chain().write(Path(keys)))
    print(f"{'size':>9} {'fmt':>4} {'plain ms':>9} {'+meta ms':>9} {'+wm+meta ms':>12} "
          f"{'+c2pa ms':>9} {'added ms':>9} {'sign ms':>8} {'c2pa bytes':>10}")
    for size in (512, 1024):
        img = picture(size)
        for fmt in ("png", "webp", "jpeg"):
            run = partial(encode.encode, img, fmt, PARAMS)
            plain = median_ms(partial(run, mark=False, embed=False), args.repeat)
            meta = median_ms(partial(run, mark=False), args.repeat)
            full = median_ms(run, args.repeat)
            signed = median_ms(partial(run, credentials=credentials), args.repeat)
            added = len(run(credentials=credentials).data) - len(run().data)
            # The signature alone on encoded bytes: the columns above differ by noise of
            # this size on a shared CPU.
            enc = run()
            sign = median_ms(partial(credentials.sign, enc.data, enc.content_type, PARAMS),
                             max(args.repeat, 9))
            print(f"{size}x{size:<4} {fmt:>4} {plain:9.1f} {meta:9.1f} {full:12.1f} "
                  f"{signed:9.1f} {signed - plain:9.1f} {sign:8.1f} {added:10d}")


if __name__ == "__main__":
    main()
