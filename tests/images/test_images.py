"""The container images, built for real (dev/images.sh: buildah from Dockerfile.operator and
Dockerfile.worker on a Debian base made locally) and run with podman the way the chart runs them:
uid 10001, read-only root filesystem, no network.

`make images-test` (not part of `make test`: a cold worker build takes minutes and GBs; see
docs/benchmarks.md, "Images"). Each fixture builds its image first, a no-op when the inputs are
unchanged, so this file also runs on its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "dev" / "images.sh"
# What the chart's pod security context sets: non-root uid, read-only root, no privilege.
RESTRICTED = ("--rm", "--read-only", "--user", "10001:10001", "--network", "none",
              "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


def _images(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(IMAGES), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def _build(name: str) -> str:
    done = _images("build", name, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ref = done.stdout.strip().splitlines()[-1]
    assert ref.startswith(f"localhost/imagegen-{name}:"), done.stdout
    return ref


def _run(ref: str, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ("--entrypoint", entrypoint) if entrypoint else ()
    return _images("run", *RESTRICTED, *extra, ref, *args)


def _config(ref: str) -> dict[str, object]:
    done = _images("podman", "image", "inspect", ref)
    assert done.returncode == 0, done.stderr
    config: dict[str, object] = json.loads(done.stdout)[0]["Config"]
    return config


@pytest.fixture(scope="module")
def operator_image() -> str:
    return _build("operator")


@pytest.fixture(scope="module")
def worker_image() -> str:
    return _build("worker")


def test_operator_image_help_as_uid_10001_read_only(operator_image: str) -> None:
    done = _run(operator_image, "--help")
    assert done.returncode == 0, done.stderr
    assert "imagegen-operator" in done.stdout
    console = _run(operator_image, "--help", entrypoint="imagegen-operator")
    assert console.returncode == 0, console.stderr
    assert console.stdout == done.stdout


def test_operator_image_config_and_contents(operator_image: str) -> None:
    config = _config(operator_image)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python", "-m", "imagegen_operator"]
    # Without --user: the image's own user. The operator's runtime is there, torch is not.
    done = _images("run", "--rm", "--read-only", "--network", "none", "--entrypoint", "python",
                   operator_image, "-c",
                   "import importlib.util as u, os, sys, kopf, kubernetes_asyncio;"
                   "import imagegen_operator;"
                   "print(os.getuid(), sys.version_info[:2] >= (3, 11), u.find_spec('torch'))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["10001", "True", "None"]


def test_worker_image_imports_torch_and_runs_help_as_uid_10001_read_only(
        worker_image: str) -> None:
    done = _run(worker_image, "--help")
    assert done.returncode == 0, done.stderr
    assert "imagegen-worker" in done.stdout and "prefetch" in done.stdout
    imports = _run(worker_image, "-c",
                   "import os, torch, diffusers, imagegen_worker, imagegen_worker.main;"
                   "print(os.getuid(), torch.__version__.split('+')[0],"
                   "      torch.ones(2).sum().item())",
                   entrypoint="python")
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.split() == ["10001", "2.15.0", "2.0"]


def test_worker_image_config(worker_image: str) -> None:
    config = _config(worker_image)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["imagegen-worker"]
    assert "/models" in (config.get("Volumes") or {})
    env = config["Env"]
    assert isinstance(env, list) and "IMAGEGEN_MODEL_CACHE=/models" in env


def test_unchanged_inputs_do_not_rebuild(operator_image: str) -> None:
    first = _images("build", "operator", timeout=900)
    again = _images("build", "operator")
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert "is up to date" in again.stderr and "building" not in again.stderr
    assert again.stdout.strip() == first.stdout.strip()


def test_the_key_follows_the_build_inputs(tmp_path: Path) -> None:
    """A copied source or the Dockerfile changing gives a new tag (a rebuild); a file the build
    does not copy, or a __pycache__, does not."""
    tree = tmp_path / "tree"
    tree.mkdir()
    copied = {word for line in (ROOT / "Dockerfile.operator").read_text().splitlines()
              if line.startswith("COPY ") for word in line.split()[1:-1]}
    for name in {"dev", "Dockerfile.operator", ".dockerignore", *copied}:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, tree / name)
    script = tree / "dev" / "images.sh"

    def key() -> str:
        done = subprocess.run([str(script), "tag", "operator"], capture_output=True, text=True,
                              timeout=120, cwd=tree)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    first = key()
    assert first == _images("tag", "operator").stdout.strip()
    (tree / "docs-only.md").write_text("not copied into the image\n")
    (tree / "operator" / "imagegen_operator" / "__pycache__").mkdir(exist_ok=True)
    (tree / "operator" / "imagegen_operator" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert key() == first
    module = tree / "operator" / "imagegen_operator" / "__init__.py"
    module.write_text(module.read_text() + "# changed\n")
    second = key()
    assert second != first
    dockerfile = tree / "Dockerfile.operator"
    dockerfile.write_text(dockerfile.read_text() + "# changed\n")
    assert key() not in (first, second)
