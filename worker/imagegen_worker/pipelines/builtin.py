"""Built-in models: what `builtin://<name>` stands for and where a worker finds its weights.

Called by `sources.resolve` (no torch here: resolving must stay cheap). Two kinds:

    builtin://tiny-sdxl    random weights built in code on load (architecture.TINY); path None
    builtin://shapes-sdxl  the same architecture trained in code on synthetic shapes
                           (shapes_train); a diffusers folder in the dev cache, keyed by version

The trained folder is made once per machine by `python -m imagegen_worker.pipelines.shapes_train`
(`dev/setup` runs it, so `make demo` and `make test` have it). A worker never trains: training
takes minutes and a worker's start-up must not; without the folder it fails with that command.
"""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

TRAINED = ("shapes-sdxl",)  # the random ones are sources.BUILTIN_MODELS (they need torch)

# The files whose content decides the trained weights (their hash is the version).
_TRAINING_CODE = ("shapes_data.py", "shapes_train.py", "architecture.py", "tokenizer.py")
TRAIN_COMMAND = "python -m imagegen_worker.pipelines.shapes_train"


class BuiltinNotTrained(FileNotFoundError):
    """A trained builtin model whose weights this machine has not trained yet."""


def cache_root() -> Path:
    """The dev cache: $IMAGEGEN_CACHE, else ~/.cache/imagegen-dev (as dev/stack's binaries)."""
    return Path(os.environ.get("IMAGEGEN_CACHE") or Path.home() / ".cache" / "imagegen-dev")


def shapes_version() -> str:
    """sha256 of the training code and the torch version (first 12 hex): new code, new folder."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in _TRAINING_CODE:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    digest.update(metadata.version("torch").encode())
    return digest.hexdigest()[:12]


def shapes_dir(root: Path | None = None) -> Path:
    """Where the trained shapes-sdxl folder of this code version lives (may not exist yet)."""
    return (root or cache_root()) / "shapes-sdxl" / shapes_version()


def locate(name: str) -> tuple[Path, str]:
    """(weights folder, revision) of trained builtin model `name`; BuiltinNotTrained if absent."""
    if name not in TRAINED:
        raise ValueError(f"{name!r} is not a trained builtin model (those are {list(TRAINED)})")
    path = shapes_dir()
    if not (path / "model_index.json").is_file():
        raise BuiltinNotTrained(
            f"builtin://{name} has not been trained on this machine (no weights at {path}): "
            f"run `{TRAIN_COMMAND}` once (about 10 minutes on 2 CPU cores; dev/setup does it)"
        )
    return path, f"builtin:{name}:{shapes_version()}"
