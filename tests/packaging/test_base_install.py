"""`pip install imagegen-operator` without extras, into a fresh virtual environment: the client
and its `imagegen` CLI work, and none of the GPU stack or the operator's runtime comes along.
And the operator image's recipe (Dockerfile.operator): `[operator]` is enough for the operator.

Slow-ish (a venv and a wheel build; pip's cache makes the downloads cheap), so it has its own
target: `make packaging`, part of `make test`. Needs PyPI or a warm pip cache.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What the Docker build context holds: the distribution's sources, nothing of the checkout's
# state (.venv, build/ and *.egg-info left by an in-tree build stay out of the repository).
SOURCES = ("pyproject.toml", "README.md", "api", "client", "operator", "worker")


def _sources(dest: Path) -> Path:
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / name)
    return dest


def _venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path


def _pip(env: Path, *args: str) -> None:
    done = subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("base-install")
    env = _venv(tmp / "venv")
    _pip(env, "install", str(_sources(tmp / "src")))
    return env


@pytest.fixture(scope="module")
def operator_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Installed the way Dockerfile.operator does it: the dependencies of `.[operator]` from
    pyproject.toml alone (an empty package standing in for the source), then the source with
    --no-deps."""
    tmp = tmp_path_factory.mktemp("operator-install")
    stub = tmp / "stub"
    (stub / "api" / "imagegen_api").mkdir(parents=True)
    (stub / "api" / "imagegen_api" / "__init__.py").touch()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, stub / name)
    env = _venv(tmp / "venv")
    _pip(env, "install", f"{stub}[operator]")
    _pip(env, "uninstall", "-y", "imagegen-operator")
    _pip(env, "install", "--no-deps", str(_sources(tmp / "src")))
    return env


def _python(env: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(env / "bin" / "python"), "-c", code],
                          capture_output=True, text=True, timeout=120)


def test_cli_help_works(base_env: Path) -> None:
    done = subprocess.run([str(base_env / "bin" / "imagegen"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "imagegen submit" in done.stdout and "imagegen status" in done.stdout
    sub = subprocess.run([str(base_env / "bin" / "imagegen"), "submit", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert sub.returncode == 0 and "--sampler" in sub.stdout, sub.stderr


def test_client_and_contract_import(base_env: Path) -> None:
    done = _python(base_env, "import imagegen_client, imagegen_api.messages as m; print("
                             "imagegen_client.ImagegenClient.__name__, m.DeadLetter.__name__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ImagegenClient", "DeadLetter"]


@pytest.mark.parametrize("module", ["torch", "diffusers", "transformers", "kopf", "boto3",
                                    "kubernetes_asyncio"])
def test_heavy_runtimes_are_absent(base_env: Path, module: str) -> None:
    done = _python(base_env, f"import {module}")
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr and module in done.stderr


def test_runs_outside_the_checkout_interpreter(base_env: Path) -> None:
    """The fresh venv is not this test's own environment (which has every extra)."""
    assert Path(sys.prefix).resolve() != base_env.resolve()
    done = _python(base_env, "import sys; print(sys.prefix)")
    assert Path(done.stdout.strip()).resolve() == base_env.resolve()


def test_build_tools_are_not_shipped(base_env: Path) -> None:
    """The CRD and reference generators stay in the checkout (tools/), not in the wheel."""
    done = _python(base_env, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    site = Path(done.stdout.strip())
    assert (site / "imagegen_client" / "cli.py").is_file()
    assert (site / "imagegen_operator").is_dir()  # shipped, usable with the [operator] extra
    shipped = {p.name for p in site.glob("imagegen_*/**/*.py")}
    assert not shipped & {"crdgen.py", "docgen.py"}, shipped
    assert not (site / "imagegen_tools").exists()


def test_operator_extra_is_what_the_operator_imports(operator_env: Path) -> None:
    """Every operator module imports with `[operator]` alone; the worker's stack stays out."""
    done = _python(operator_env, "import imagegen_operator.startup, imagegen_client")
    assert done.returncode == 0, done.stderr
    helped = subprocess.run([str(operator_env / "bin" / "imagegen-operator"), "--help"],
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "imagegen-operator" in helped.stdout, helped.stderr
    for module in ("torch", "diffusers", "boto3"):
        assert _python(operator_env, f"import {module}").returncode != 0, module
