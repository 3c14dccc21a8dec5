"""Where weights come from: an ImageModel `source` URI → a local folder and a stable revision.

`resolve` is called by `ModelRunner.load` (for the model and each LoRA) and by the prefetch Job.
Remote sources (s3://, hf://) are downloaded into the model cache once and reused; local ones
(file://, pvc://) are read in place; builtin://tiny-* models have no files at all.

    builtin://tiny-sdxl      built in code (architecture.py)  revision builtin:tiny-sdxl:v2
    builtin://tiny-sd3       built in code (flow.py)          revision builtin:tiny-sd3:v1
    builtin://tiny-flux      built in code (flow.py)          revision builtin:tiny-flux:v1
    builtin://shapes-sdxl    trained, dev cache (builtin.py)  revision builtin:shapes-sdxl:<version>
    builtin://tiny-controlnet-sdxl  a ControlNet built in code (controlnet_architecture.py)
    file:///abs/dir          that folder                      revision sha256:<content hash>
    pvc://claim/path         <model cache root>/path          revision sha256:<content hash>
    s3://bucket/prefix       <cache>/s3/bucket/prefix/<etag digest>   revision s3:<etag digest>
    hf://org/repo@rev        <cache>/hf (huggingface_hub layout)      revision hf:org/repo@<commit>

The model cache root is `cache_dir` when given, else $IMAGEGEN_MODEL_CACHE, else /models: the
volume workers mount (a prefetched PVC, read-only) and the prefetch Job writes.

Local sources are confined (the CRD refuses the same URIs at admission, see specs.SOURCE_RULES):
a pvc:// path never leaves the cache root (no `..` segment, no symlink out of it), and only
regular files are read — a device, fifo or socket (file:///dev/zero would hash forever) is
refused, as is anything over MAX_SOURCE_BYTES or MAX_SOURCE_FILES.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from imagegen_api import naming, specs

from . import architecture, builtin, controlnet_architecture, flow

log = logging.getLogger(__name__)

# A progress line for people watching a download (the prefetch Job prints them).
Progress = Callable[[str], None]

# builtin://<name> → the architecture built in code on load (families.BUILTIN_FAMILIES: the family).
BUILTIN_MODELS: dict[str, architecture.SdxlArchitecture | flow.FlowArchitecture] = {
    "tiny-sdxl": architecture.TINY,
    **flow.ARCHITECTURES,
}
# builtin://<name> of ControlNets built in code (families.BUILTIN_CONTROLNETS: the family).
BUILTIN_CONTROLNETS: dict[str, controlnet_architecture.ControlNetArchitecture] = {
    "tiny-controlnet-sdxl": controlnet_architecture.TINY_CONTROLNET,
}

# Bounds on what a local source may hold: above any real checkpoint (the largest public
# diffusion models are ~60 GB in float32), far below a runaway folder such as / or /proc.
MAX_SOURCE_BYTES = 512 * 2**30
MAX_SOURCE_FILES = 100_000


class UnsafeSource(ValueError):
    """A source URI or the files it names that the worker refuses to read."""


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
    """Split a source URI (the CRD pattern already checked its shape); ValueError if unknown,
    UnsafeSource (a ValueError) if it would leave its volume or read kernel files."""
    try:
        specs.check_source(uri)  # what the CRD refuses at admission, refused here too
    except ValueError as err:
        raise UnsafeSource(f"model {err}") from None
    parts = urlsplit(uri)
    scheme, netloc, path = parts.scheme, parts.netloc, unquote(parts.path)
    if scheme == "builtin":
        known = sorted([*BUILTIN_MODELS, *builtin.TRAINED, *BUILTIN_CONTROLNETS])
        if netloc not in known:
            raise ValueError(f"unknown builtin model {netloc!r} (known: {known})")
        return Source("builtin", netloc)
    if scheme == "file":
        if netloc or not path.startswith("/"):
            raise ValueError(f"file:// source needs an absolute path (file:///dir): {uri!r}")
        _no_parent_segments(uri, path)
        return Source("file", path)
    if scheme == "pvc":
        _no_parent_segments(uri, path)
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
    if src.scheme == "builtin" and src.location in builtin.TRAINED:
        return LocalWeights(src, *builtin.locate(src.location))  # BuiltinNotTrained if absent
    if src.scheme == "builtin":
        arch = BUILTIN_MODELS.get(src.location) or BUILTIN_CONTROLNETS[src.location]
        return LocalWeights(src, None, arch.revision)
    if src.scheme in ("file", "pvc"):
        local = Path(src.location) if src.scheme == "file" else root / src.path
        if not local.exists():
            hint = "" if src.scheme == "file" else f" (pvc://{src.location} is read at {root})"
            raise FileNotFoundError(f"model source {uri}: {local} does not exist{hint}")
        if src.scheme == "pvc" and not local.resolve().is_relative_to(root.resolve()):
            raise UnsafeSource(f"model source {uri}: {local} resolves to {local.resolve()}, "
                               f"outside the model cache root {root}")
        try:
            return LocalWeights(src, local, content_revision(local))
        except UnsafeSource as err:
            raise UnsafeSource(f"model source {uri}: {err}") from None
    if src.scheme == "s3":
        from . import s3  # boto3 only where it is needed

        return s3.fetch(src, root, progress=progress)
    from . import hf

    return hf.fetch(src, root, revision=revision, variant=variant, progress=progress)


def content_revision(path: Path) -> str:
    """sha256 over every file's relative path and content (hidden files skipped).

    Reading multi-gigabyte weights costs a few seconds but also warms the page cache for the
    load that follows; files are hashed in parallel (hashlib releases the GIL). Only regular
    files are read, each up to the size it had when listed; UnsafeSource names what was refused.
    """
    files = [path] if not path.is_dir() else sorted(_visible_files(path))
    sizes = [_regular_size(f) for f in files]
    if len(files) > MAX_SOURCE_FILES:
        raise UnsafeSource(f"{path} holds more than {MAX_SOURCE_FILES} files "
                           f"(limit MAX_SOURCE_FILES={MAX_SOURCE_FILES})")
    if sum(sizes) > MAX_SOURCE_BYTES:
        raise UnsafeSource(f"{path} holds {sum(sizes)} bytes, more than the limit "
                           f"MAX_SOURCE_BYTES={MAX_SOURCE_BYTES}")
    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(pool.map(_file_sha256, files, sizes))
    total = hashlib.sha256()
    for file, digest in zip(files, digests, strict=True):
        rel = file.name if file == path else file.relative_to(path).as_posix()
        total.update(f"{rel}\0{digest}\n".encode())
    return f"sha256:{total.hexdigest()[:16]}"


def _no_parent_segments(uri: str, path: str) -> None:
    if ".." in path.split("/"):
        raise UnsafeSource(f"model source {uri!r}: a '..' path segment is not allowed "
                           "(the path must stay inside the volume it names)")


def _visible_files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [Path(dirpath, f) for f in filenames if not f.startswith(".")]
        if len(out) > MAX_SOURCE_FILES:
            break  # content_revision reports it; no need to walk the rest of a huge tree
    return out


def _regular_size(file: Path) -> int:
    """Size of a regular file (following symlinks); UnsafeSource for anything else."""
    mode = file.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = ("character device" if stat.S_ISCHR(mode) else "block device" if stat.S_ISBLK(mode)
                else "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise UnsafeSource(f"{file} is a {kind}: only regular files and folders can hold weights")
    return file.stat().st_size


def _file_sha256(file: Path, size: int) -> str:
    """Digest of the first `size` bytes; a file that grew while listed is refused, so a file
    whose reported size lies (procfs) cannot make the read endless."""
    digest = hashlib.sha256()
    left = size
    with file.open("rb") as fh:
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        if fh.read(1):
            raise UnsafeSource(f"{file} is longer than its reported size {size}: "
                               "changing while read, or not a real file")
    return digest.hexdigest()
