"""hf:// model sources: a Hugging Face Hub snapshot in the model cache (huggingface_hub layout).

Only the files a diffusers pipeline loads are fetched: component folders' configs, tokenizers and
weights (safetensors preferred, the dtype's variant such as `*.fp16.safetensors` when the repo has
one), never ONNX/Flax exports or the single-file checkpoints many repos keep at their root (for
SDXL base that halves the download). Offline (HF_HUB_OFFLINE=1, or the Hub unreachable) the
cached snapshot is used; the revision is always the resolved commit, `hf:org/repo@<commit>`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path, PurePosixPath

from huggingface_hub import constants, get_cached_repo_tree, snapshot_download
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .sources import LocalWeights, Progress, Source

log = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".json", ".txt", ".model")  # configs, vocabularies, sentencepiece models
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def fetch(
    src: Source,
    root: Path,
    *,
    revision: str | None = None,
    variant: str | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
) -> LocalWeights:
    """Download (or find in the cache) the snapshot of `src` and return its folder."""
    hub_cache = root / "hf"
    rev = src.revision or revision or "main"
    offline = constants.HF_HUB_OFFLINE if offline is None else offline
    files = _listing(src.location, rev, hub_cache, offline)
    patterns = select_files(files, variant) if files is not None else None
    if progress:
        what = f"{len(patterns)} files" if patterns is not None else "cached snapshot"
        progress(f"hf://{src.location}@{rev}: {what} into {hub_cache}")
    before = _blob_count(hub_cache, src.location)
    path = Path(
        snapshot_download(
            src.location,
            revision=rev,
            cache_dir=hub_cache,
            allow_patterns=patterns,
            local_files_only=offline,
        )
    )
    downloaded = _blob_count(hub_cache, src.location) - before
    return LocalWeights(src, path, f"hf:{src.location}@{path.name}", downloaded_files=downloaded)


def select_files(files: list[str], variant: str | None = None) -> list[str]:
    """The repo files a diffusers pipeline (or a LoRA repo) needs, from the repo's file list.

    A pipeline repo (model_index.json at the root) gets model_index.json plus each component
    folder's configs and weights; a repo without one (a LoRA) gets its root configs and weights.
    In each folder the weights are the variant's when present, else the plain ones, and
    safetensors when present, else .bin.
    """
    pipeline = "model_index.json" in files
    folders: dict[str, list[str]] = defaultdict(list)
    for f in files:
        path = PurePosixPath(f)
        depth = len(path.parts)
        if path.name.startswith(".") or (pipeline and depth == 1 and f != "model_index.json"):
            continue
        if not pipeline and depth > 1:
            continue
        folders[str(path.parent)].append(f)
    chosen: list[str] = []
    for names in folders.values():
        chosen += [f for f in names if f.endswith(CONFIG_SUFFIXES)]
        chosen += _weights(names, variant)
    return sorted(set(chosen))


def _weights(names: list[str], variant: str | None) -> list[str]:
    weights = [f for f in names if f.endswith(WEIGHT_SUFFIXES)]
    if variant:
        tagged = [f for f in weights if f".{variant}." in PurePosixPath(f).name]
        weights = tagged or [f for f in weights if not _has_variant_tag(f)]
    else:
        weights = [f for f in weights if not _has_variant_tag(f)] or weights
    safetensors = [f for f in weights if f.endswith(".safetensors")]
    return safetensors or weights


def _has_variant_tag(f: str) -> bool:
    """diffusion_pytorch_model.fp16.safetensors → True (name.<variant>.<ext>)."""
    return len(PurePosixPath(f).name.split(".")) > 2 and ".index." not in f


def _listing(repo: str, rev: str, hub_cache: Path, offline: bool) -> list[str] | None:
    """The repo's file list at `rev`: from the Hub, else from the cache's tree listing."""
    if not offline:
        try:
            infos = snapshot_download(repo, revision=rev, cache_dir=hub_cache, dry_run=True)
            return [info.filename for info in infos]
        except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError):
            raise
        except Exception as err:  # connection refused, timeouts, Hub errors: try the cache
            log.warning("hf://%s@%s: Hub not reachable (%s): trying the cache", repo, rev, err)
    try:
        return [f.path for f in get_cached_repo_tree(repo, revision=rev, cache_dir=hub_cache)]
    except CachedRepoTreeNotFoundError:
        return None


def _blob_count(hub_cache: Path, repo: str) -> int:
    blobs = hub_cache / f"models--{repo.replace('/', '--')}" / "blobs"
    return sum(1 for _ in blobs.iterdir()) if blobs.is_dir() else 0
