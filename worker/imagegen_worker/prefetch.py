"""`imagegen-worker prefetch`: put a model's weights into the cache volume before workers need them.

Run by the operator's prefetch Job with the ImageModel's claim mounted at the cache root; workers
mount the same claim (read-only) and find the weights where `sources.resolve` looks, so a cold
worker starts without downloading. Idempotent: sources are cached by content (S3 ETags, hub
commits), and a marker `<dest>/.imagegen-prefetch/<model>.json` records the source and revision;
a model pinned to an immutable revision whose marker matches is not even looked up again.

    imagegen-worker prefetch --model sdxl --model-config '{"source": "s3://weights/sdxl", ...}'
    imagegen-worker prefetch --model sdxl --source hf://org/repo@<commit> --dest /models
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imagegen_api.specs import ImageModelSpec
from pydantic import ValidationError

MARKER_DIR = ".imagegen-prefetch"
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status (0: weights in place)."""
    args = _parser().parse_args(_strip_command(sys.argv[1:] if argv is None else argv))
    try:
        spec = _spec(args)
    except (ValueError, OSError) as err:
        print(f"prefetch: {err}", file=sys.stderr)
        return 2
    name = args.model or _name_from(spec.source)
    try:
        prefetch(name, spec, dest=args.dest, force=args.force)
    except Exception as err:  # any failure fails the Job, with the reason in its log
        print(f"prefetch {name}: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 2 if _refused(err) else 1
    return 0


def prefetch(name: str, spec: ImageModelSpec, *, dest: str | None = None, force: bool = False
             ) -> dict[str, Any]:
    """Download `spec`'s weights (and LoRAs) into `dest`; returns the marker it wrote."""
    from imagegen_worker.pipelines import loader, sources  # torch-heavy: import on use

    root = sources.model_root(dest)
    marker_path = root / MARKER_DIR / f"{name}.json"
    previous = _read(marker_path)
    if not force and previous and _still_valid(previous, spec):
        say(f"prefetch {name}: {spec.source} already cached (revision {previous['revision']})")
        return previous
    say(f"prefetch {name}: {spec.source} -> {root}")
    started = time.monotonic()
    variant = loader.VARIANTS.get(spec.dtype)
    weights = sources.resolve(spec.source, cache_dir=root, revision=spec.revision,
                              variant=variant, progress=say)
    loras = {}
    for lora in spec.loras:
        got = sources.resolve(lora.source, cache_dir=root, progress=say)
        loras[lora.name] = {"source": lora.source, "revision": got.revision}
    marker = {
        "model": name,
        "source": spec.source,
        "revision": weights.revision,
        "path": str(weights.path) if weights.path else None,
        "loras": loras,
        "completed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    marker_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(marker, indent=2))
    tmp.replace(marker_path)
    what = ("built in code, nothing to download" if weights.path is None
            else f"{weights.downloaded_files} files downloaded")
    say(f"prefetch {name}: done, revision {weights.revision}, {what} in "
        f"{time.monotonic() - started:.1f}s (marker {marker_path})")
    return marker


def _refused(err: Exception) -> bool:
    """A source the worker will not read (a device, an escape from the volume): bad input."""
    from imagegen_worker.pipelines import sources

    return isinstance(err, sources.UnsafeSource)


def say(line: str) -> None:
    print(line, flush=True)


def _still_valid(marker: dict[str, Any], spec: ImageModelSpec) -> bool:
    """True when the marker is for this source and nothing it names can have changed."""
    if marker.get("source") != spec.source or spec.loras:
        return False
    if spec.source.startswith("builtin://"):
        return True
    pinned = spec.source.partition("@")[2] or spec.revision or ""
    return spec.source.startswith("hf://") and bool(COMMIT.match(pinned))


def _spec(args: argparse.Namespace) -> ImageModelSpec:
    if args.model_config:
        text = args.model_config
        if not text.lstrip().startswith("{"):
            text = Path(text.removeprefix("@")).read_text()
        data = json.loads(text)
        if isinstance(data, dict) and "spec" in data:  # a worker-config model entry
            args.model = args.model or data.get("name")
            data = data["spec"]
        if args.source:
            data = {**data, "source": args.source}
    elif args.source:
        data = {"source": args.source}
    else:
        raise ValueError("give --model-config or --source")
    try:
        return ImageModelSpec.model_validate(data)
    except ValidationError as err:
        raise ValueError(f"invalid model config: {err}") from None


def _name_from(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", source.split("://", 1)[-1]).strip("-") or "model"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _strip_command(argv: list[str]) -> list[str]:
    return argv[1:] if argv[:1] == ["prefetch"] else argv


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imagegen-worker prefetch",
        description="Download a model's weights into the model cache (idempotent).",
    )
    p.add_argument("--model", help="ImageModel name (names the marker file)")
    p.add_argument("--model-config",
                   help="ImageModel spec as JSON (camelCase, as in the CR), or @FILE / FILE")
    p.add_argument("--source", help="weights URI (overrides the config's source)")
    p.add_argument("--dest", help="cache root (default $IMAGEGEN_MODEL_CACHE or /models)")
    p.add_argument("--force", action="store_true", help="look the source up even if cached")
    return p


if __name__ == "__main__":
    sys.exit(main())
