"""Where weights come from: an ImageModel `source` URI → a local folder and a stable revision.

`resolve` is called by `ModelRunner.load` (for the model and each LoRA) and by the prefetch Job.
Remote sources (s3://, hf://) are downloaded into the model cache once and reused; local ones
(file://, pvc://) are read in place; builtin:// has no files at all.

    builtin://tiny-sdxl      built in code                    revision builtin:tiny-sdxl:v1
    file:///abs/dir          that folder                      revision sha256:<content hash>
    pvc://claim/path         <model cache root>/path          revision sha256:<content hash>
    s3://bucket/prefix       <cache>/s3/bucket/prefix/<etag digest>   revision s3:<etag digest>
    hf://org/repo@rev        <cache>/hf (huggingface_hub layout)      revision hf:org/repo@<commit>

The model cache root is `cache_dir` when given, else $IMAGEGEN_MODEL_CACHE, else /models: the
volume workers mount (a prefetched PVC, read-only) and the prefetch Job writes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from imagegen_api import naming

from . import architecture

log = logging.getLogger(__name__)

# A progress line for people watching a download (the prefetch Job prints them).
Progress = Callable[[str], None]

BUILTIN_MODELS = {"tiny-sdxl": architecture.TINY}


@dataclass(frozen=True)
class Source:
    """A parsed source URI. `location` is the builtin name, claim, bucket, repo or folder."""

    scheme: str
    location: str
    path: str = ""
    revision: str | None = None


@dataclass(frozen=True)
class LocalWeights:
    """Resolved weights: a folder or file on disk (None for builtin) and their revision id."""

    source: Source
    path: Path | None
    revision: str
    downloaded_files: int = 0


def parse_source(uri: str) -> Source:
    """Split a source URI (the CRD pattern already checked its shape); ValueError if unknown."""
    parts = urlsplit(uri)
    scheme, netloc, path = parts.scheme, parts.netloc, unquote(parts.path)
    if scheme == "builtin":
        if netloc not in BUILTIN_MODELS:
            raise ValueError(f"unknown builtin model {netloc!r} (known: {sorted(BUILTIN_MODELS)})")
        return Source("builtin", netloc)
    if scheme == "file":
        if netloc or not path.startswith("/"):
            raise ValueError(f"file:// source needs an absolute path (file:///dir): {uri!r}")
        return Source("file", path)
    if scheme == "pvc":
        return Source("pvc", netloc, path.strip("/"))
    if scheme == "s3":
        return Source("s3", netloc, path.lstrip("/"))
    if scheme == "hf":
        repo, _, rev = f"{netloc}{path}".partition("@")
        return Source("hf", repo, revision=rev or None)
    raise ValueError(f"unsupported model source {uri!r}")


def model_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The model cache volume: `cache_dir`, else $IMAGEGEN_MODEL_CACHE, else /models."""
    return Path(cache_dir or os.environ.get(naming.ENV_MODEL_CACHE) or naming.MODEL_CACHE_DIR)


def resolve(
    uri: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    variant: str | None = None,
    progress: Progress | None = None,
) -> LocalWeights:
    """Make the weights of `uri` available locally, downloading them if needed.

    `revision` pins an hf:// source that names none; `variant` ("fp16") prefers those weight
    files when choosing what to download from the hub.
    """
    src = parse_source(uri)
    root = model_root(cache_dir)
    if src.scheme == "builtin":
        return LocalWeights(src, None, BUILTIN_MODELS[src.location].revision)
    if src.scheme in ("file", "pvc"):
        local = Path(src.location) if src.scheme == "file" else root / src.path
        if not local.exists():
            hint = "" if src.scheme == "file" else f" (pvc://{src.location} is read at {root})"
            raise FileNotFoundError(f"model source {uri}: {local} does not exist{hint}")
        return LocalWeights(src, local, content_revision(local))
    if src.scheme == "s3":
        from . import s3  # boto3 only where it is needed

        return s3.fetch(src, root, progress=progress)
    from . import hf

    return hf.fetch(src, root, revision=revision, variant=variant, progress=progress)


def content_revision(path: Path) -> str:
    """sha256 over every file's relative path and content (hidden files skipped).

    Reading multi-gigabyte weights costs a few seconds but also warms the page cache for the
    load that follows; files are hashed in parallel (hashlib releases the GIL).
    """
    files = [path] if path.is_file() else sorted(_visible_files(path))
    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(pool.map(_file_sha256, files))
    total = hashlib.sha256()
    for file, digest in zip(files, digests, strict=True):
        rel = file.name if file == path else file.relative_to(path).as_posix()
        total.update(f"{rel}\0{digest}\n".encode())
    return f"sha256:{total.hexdigest()[:16]}"


def _visible_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [Path(dirpath, f) for f in filenames if not f.startswith(".")]
    return out


def _file_sha256(file: Path) -> str:
    with file.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
