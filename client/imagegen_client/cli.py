"""`imagegen`: the command-line client of a generation pool (built on `client`; installed by a
plain `pip install imagegen-operator`).

    imagegen submit --pool tiny [-n NS] [--tier fast] [--seed N] [--size 64x64] [--steps 4]
                    [--count 24] [--out DIR] "prompt" ["prompt" ...]
    imagegen submit --pool tiny --init-image cat.png [--mask mask.png] [--strength 0.6] "prompt"
    imagegen status --pool tiny [-n NS] REQUEST_ID
    imagegen submit --gateway URL --api-key sk-... [same options] "prompt" ...
    imagegen status --gateway URL --api-key sk-... REQUEST_ID

`submit` sends --count requests (the prompts, and comma-separated --tier values, taken in turn;
with --seed N request i gets seed N+i, so running the same command again is answered from the
cache), shows a progress bar on stderr, prints one row per request and downloads the images into
--out. Endpoints come from flags or IMAGEGEN_KAFKA_BOOTSTRAP / IMAGEGEN_REDIS_URL.
With --gateway (or IMAGEGEN_GATEWAY_URL, key IMAGEGEN_API_KEY) requests go through an
imagegen-gateway: POST /v1/generations, then GET /v1/generations/{id} until terminal.
--init-image / --mask: a local PNG/JPEG/WebP file is sent inline (base64, at most
IMAGE_INPUT_MAX_BYTES for the two together); s3://BUCKET/KEY names an object in the pool's bucket
(KEY below <namespace>/<pool>/), passed through for the worker to read.
Exit code: 0 when every request succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from imagegen_api import naming
from imagegen_api.messages import (
    IMAGE_INPUT_MAX_BYTES,
    LORA_WEIGHT_RANGE,
    GenerationRequest,
    GenerationResult,
    ImageInput,
    LoraChoice,
)
from imagegen_api.specs import GUIDANCE_RANGE, OUTPUT_FORMATS, SAMPLERS

from .client import ImagegenClient, new_request_id, read_status
from .gateway import GatewayClient, GatewayError, error_message

BAR_WIDTH = 30


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagegen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("submit", help="generate images and wait for them")
    s.add_argument("prompts", nargs="+", metavar="PROMPT")
    s.add_argument("--pool", default=None, help="required without --gateway")
    s.add_argument("-n", "--namespace", default=os.environ.get("IMAGEGEN_NAMESPACE", "default"))
    s.add_argument("--tier", default="fast", help="tier, or comma-separated tiers taken in turn")
    s.add_argument("--model", default=None, help="ImageModel name (default: the pool's first)")
    s.add_argument("--seed", type=int, default=None, help="seed of the first request (N+i)")
    s.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT, e.g. 64x64")
    s.add_argument("--steps", type=int, default=None)
    s.add_argument("--guidance", type=_guidance, default=None,
                   help="classifier-free guidance, {:g}..{:g}".format(*GUIDANCE_RANGE))
    s.add_argument("--sampler", default=None, choices=SAMPLERS,
                   help="default: the model's")
    s.add_argument("--negative", default=None, help="negative prompt")
    s.add_argument("--lora", action="append", type=_lora, default=None, metavar="NAME[=WEIGHT]",
                   help="a LoRA adapter the model declares, repeatable (default weight 1; "
                   "none given: the model's declared adapters)")
    s.add_argument("--init-image", type=_image, default=None, metavar="FILE|s3://BUCKET/KEY",
                   help="img2img: start from this image (a local file is sent inline, at most "
                   f"{IMAGE_INPUT_MAX_BYTES // 1024} KiB; an S3 key in the pool's bucket)")
    s.add_argument("--mask", type=_image, default=None, metavar="FILE|s3://BUCKET/KEY",
                   help="inpainting: white = repaint, black = keep (the init image's size)")
    s.add_argument("--strength", type=_strength, default=None,
                   help="share of the init image repainted, 0 < s <= 1 (worker default 0.8)")
    s.add_argument("--images", type=int, default=1, help="images per request")
    s.add_argument("--format", default="png", choices=OUTPUT_FORMATS)
    s.add_argument("--quality", type=_quality, default=None,
                   help="webp/jpeg quality 1..100 (default: the pool's)")
    s.add_argument("--count", type=int, default=None, help="requests (default: one per prompt)")
    s.add_argument("--out", type=Path, default=None, help="download images into this folder")
    s.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for results")
    s.add_argument("--json", action="store_true", help="print results as JSON lines")
    _endpoints(s)
    _gateway(s)

    st = sub.add_parser("status", help="show the job record of a request")
    st.add_argument("request_id")
    st.add_argument("--pool", default=None, help="records are per pool (not with --gateway)")
    st.add_argument("-n", "--namespace", default=os.environ.get("IMAGEGEN_NAMESPACE", "default"))
    st.add_argument("--redis", default=os.environ.get(naming.ENV_REDIS_URL))
    st.add_argument("--jobs-redis", default=os.environ.get(naming.ENV_JOBS_REDIS_URL),
                    help="the job records' own Redis, when the pool has one")
    _gateway(st)

    ns = parser.parse_args(argv)
    if not ns.gateway and not ns.pool:
        parser.error("--pool is required (or --gateway URL)")
    if ns.command == "submit":
        problem = check_images(ns)
        if problem:
            parser.error(problem)
    if ns.command == "status":
        return asyncio.run(_status(ns))
    return asyncio.run(_submit(ns))


def _size(text: str) -> str:
    """--size as WIDTHxHEIGHT (or one number for a square); limits are the model's, checked by
    the worker."""
    if not re.fullmatch(r"[1-9][0-9]*(x[1-9][0-9]*)?", text.lower()):
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 64x64")
    return text


def _lora(text: str) -> LoraChoice:
    """--lora style or --lora style=0.7, weight within the contract's range."""
    name, sep, weight = text.partition("=")
    try:
        choice = LoraChoice(name=name, weight=float(weight) if sep else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lora {text!r}: NAME or NAME=WEIGHT") from None
    lo, hi = LORA_WEIGHT_RANGE
    if not name or not lo <= choice.weight <= hi:
        raise argparse.ArgumentTypeError(f"--lora {text!r}: a name, and a weight in "
                                         f"[{lo:g}, {hi:g}]")
    return choice


# The start of each accepted image format (the worker decodes; this catches a wrong file early).
IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", 0), (b"\xff\xd8\xff", 0), (b"WEBP", 8))


def _image(text: str) -> ImageInput:
    """--init-image / --mask: s3://BUCKET/KEY → the key (the worker reads its pool's bucket);
    a local file → inline base64, refused over IMAGE_INPUT_MAX_BYTES or not PNG/JPEG/WebP."""
    if text.startswith("s3://"):
        _bucket, _, key = text[len("s3://"):].partition("/")
        if not _bucket or not key:
            raise argparse.ArgumentTypeError(f"{text!r} is not s3://BUCKET/KEY")
        return ImageInput(s3_key=key)
    path = Path(text)
    try:
        size = path.stat().st_size
        if size > IMAGE_INPUT_MAX_BYTES:
            raise argparse.ArgumentTypeError(
                f"{text} is {size} bytes, over the limit of {IMAGE_INPUT_MAX_BYTES} bytes "
                f"({IMAGE_INPUT_MAX_BYTES // 1024} KiB) for an inline image: upload it to the "
                "pool's bucket and pass s3://BUCKET/<namespace>/<pool>/...")
        data = path.read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror}") from None
    if not any(data[at:at + len(magic)] == magic for magic, at in IMAGE_MAGIC):
        raise argparse.ArgumentTypeError(f"{text} is not a PNG, JPEG or WebP file")
    return ImageInput(b64=base64.b64encode(data).decode())


def _quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"quality {text} is outside 1..100")
    return value


def _strength(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"strength {text} is outside (0, 1]")
    return value


def inline_bytes(given: ImageInput | None) -> int:
    """Decoded size of an inline image (0 for an S3 key or none)."""
    return 0 if given is None or given.b64 is None else len(base64.b64decode(given.b64))


def check_images(ns: argparse.Namespace) -> str | None:
    """What is wrong with --init-image/--mask/--strength together (pure; None: nothing)."""
    if ns.init_image is None:
        for flag, value in (("--mask", ns.mask), ("--strength", ns.strength)):
            if value is not None:
                return f"{flag} needs --init-image"
        return None
    both = inline_bytes(ns.init_image) + inline_bytes(ns.mask)
    if ns.mask is not None and both > IMAGE_INPUT_MAX_BYTES:
        return (f"--init-image and --mask inline are {both} bytes together, over the limit of "
                f"{IMAGE_INPUT_MAX_BYTES} bytes of one request message: put one in S3")
    if ns.pool:  # without it (a gateway's pool) the worker checks the key
        prefix = naming.object_prefix(ns.namespace, ns.pool)
        for flag, given in (("--init-image", ns.init_image), ("--mask", ns.mask)):
            if given is not None and given.s3_key is not None and \
                    not given.s3_key.startswith(prefix):
                return (f"{flag} s3 key {given.s3_key!r} is not below the pool's prefix "
                        f"{prefix!r}")
    return None


def _guidance(text: str) -> float:
    """--guidance within the range the contract allows (the worker would reject it later)."""
    value = float(text)
    lo, hi = GUIDANCE_RANGE
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"guidance {text} is outside [{lo:g}, {hi:g}]")
    return value


def _gateway(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gateway", default=os.environ.get("IMAGEGEN_GATEWAY_URL"),
                   help="an imagegen-gateway URL: go through it instead of Kafka/Redis")
    p.add_argument("--api-key", default=os.environ.get("IMAGEGEN_API_KEY"),
                   help="the gateway key (env IMAGEGEN_API_KEY)")


def _endpoints(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", default=os.environ.get(naming.ENV_KAFKA_BOOTSTRAP,
                                                         "127.0.0.1:9092"))
    p.add_argument("--redis", default=os.environ.get(naming.ENV_REDIS_URL))


def build_requests(ns: argparse.Namespace) -> list[GenerationRequest]:
    """The requests `submit` sends (pure: used by tests)."""
    count = ns.count or len(ns.prompts)
    tiers = [t.strip() for t in ns.tier.split(",") if t.strip()]
    width = height = None
    if ns.size:
        w, _, h = ns.size.lower().partition("x")
        width, height = int(w), int(h or w)
    out = []
    for i in range(count):
        out.append(GenerationRequest(
            request_id=new_request_id("cli"),
            prompt=ns.prompts[i % len(ns.prompts)],
            negative_prompt=ns.negative,
            model=ns.model,
            width=width,
            height=height,
            steps=ns.steps,
            guidance=ns.guidance,
            sampler=ns.sampler,
            seed=None if ns.seed is None else ns.seed + i,
            num_images=ns.images,
            output_format=ns.format,
            quality=ns.quality,
            tier=tiers[i % len(tiers)],
            loras=ns.lora,
            init_image=ns.init_image,
            mask=ns.mask,
            strength=ns.strength,
        ))
    return out


class ProgressBar:
    """A one-line text bar on stderr, redrawn with \\r (only when stderr is a terminal)."""

    def __init__(self, total: int, stream: object = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.started = time.monotonic()
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self._last = ""

    def line(self, results: dict[str, GenerationResult]) -> str:
        done = len(results)
        cached = sum(1 for r in results.values() if r.cache_hit)
        bad = sum(1 for r in results.values() if r.status != "succeeded")
        filled = int(BAR_WIDTH * done / self.total) if self.total else BAR_WIDTH
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        return (f"[{bar}] {done}/{self.total} done, {cached} cached, {bad} not succeeded, "
                f"{time.monotonic() - self.started:.1f}s")

    def update(self, results: dict[str, GenerationResult]) -> None:
        text = self.line(results)
        if self.live and text != self._last:
            print("\r" + text, end="", file=self.stream, flush=True)  # type: ignore[call-overload]
            self._last = text

    def finish(self, results: dict[str, GenerationResult]) -> None:
        prefix = "\r" if self.live else ""
        print(prefix + self.line(results), file=self.stream, flush=True)  # type: ignore[call-overload]


def table(requests: Sequence[GenerationRequest], results: dict[str, GenerationResult]) -> str:
    """The results table `submit` prints (pure: used by tests)."""
    header = ("REQUEST", "TIER", "STATUS", "CACHE", "QUEUE_MS", "GEN_MS", "TOTAL_MS", "WORKER",
              "OBJECT")
    rows: list[tuple[str, ...]] = [header]
    for req in requests:
        r = results.get(req.request_id)
        if r is None:
            rows.append((req.request_id, req.tier or "", "timeout", "", "", "", "", "", ""))
            continue
        obj = r.images[0].key if r.images else (r.error.code if r.error else "")
        if len(r.images) > 1:
            obj += f" (+{len(r.images) - 1})"
        rows.append((
            r.request_id, r.tier or req.tier or "", r.status, "hit" if r.cache_hit else "-",
            f"{r.timings.queue_ms:.0f}", f"{r.timings.generate_ms:.0f}",
            f"{r.timings.total_ms:.0f}", r.worker or "", obj,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


async def _submit(ns: argparse.Namespace) -> int:
    if ns.gateway:
        return await _submit_gateway(ns)
    requests = build_requests(ns)
    bar = ProgressBar(len(requests))
    async with ImagegenClient(ns.bootstrap, ns.namespace, ns.pool,
                              redis_url=ns.redis) as client:
        ids = await client.submit(requests)
        results = await client.wait(ids, within=ns.timeout, progress=bar.update)
    bar.finish(results)
    return await _report(ns, requests, ids, results)


async def _report(ns: argparse.Namespace, requests: Sequence[GenerationRequest], ids: list[str],
                  results: dict[str, GenerationResult]) -> int:
    """Print the results (table or JSON lines), download the images if asked; the exit code:
    0 when every request succeeded."""
    if ns.json:
        for rid in ids:
            if rid in results:
                print(results[rid].model_dump_json(exclude_none=True))
    else:
        print(table(requests, results))
    if ns.out is not None:
        ok = [results[rid] for rid in ids if rid in results and results[rid].images]
        paths = await ImagegenClient.download(ok, ns.out)
        print(f"downloaded {len(paths)} images into {ns.out}", file=sys.stderr)
    good = all(rid in results and results[rid].status == "succeeded" for rid in ids)
    return 0 if good else 1


async def _submit_gateway(ns: argparse.Namespace) -> int:
    requests = build_requests(ns)
    bar = ProgressBar(len(requests))
    try:
        async with GatewayClient(ns.gateway, ns.api_key) as client:
            ids = await client.submit(requests)
            results = await client.wait(ids, within=ns.timeout, progress=bar.update)
    except GatewayError as err:
        print(f"imagegen submit: {err}", file=sys.stderr)
        return 2
    bar.finish(results)
    return await _report(ns, requests, ids, results)


async def _status_gateway(ns: argparse.Namespace) -> int:
    async with GatewayClient(ns.gateway, ns.api_key) as client:
        status, payload = await client.view(ns.request_id)
    if status != 200:
        print(f"imagegen status: {error_message(status, payload)}", file=sys.stderr)
        return 1
    print(json.dumps(payload, indent=2))
    return 0


async def _status(ns: argparse.Namespace) -> int:
    if ns.gateway:
        return await _status_gateway(ns)
    if not ns.redis and not ns.jobs_redis:
        print(f"imagegen status: set --redis or {naming.ENV_REDIS_URL}", file=sys.stderr)
        return 2
    record = await read_status(ns.redis, ns.namespace, ns.pool, ns.request_id,
                               jobs_redis_url=ns.jobs_redis)
    if record is None:
        print(f"no job record for {ns.request_id} (unknown, or expired)", file=sys.stderr)
        return 1
    print(json.dumps(record.model_dump(mode="json", exclude_none=True), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
