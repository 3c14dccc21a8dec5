"""`imagegen-worker prefetch` on a temporary cache root, with an in-memory S3 and no hub.

What it fakes: the S3 client (the same in-memory bucket as the source tests). What it asserts:
weights land where workers look, a marker records the revision, a second run downloads nothing,
and bad input or a missing source fails with a message and a non-zero status.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imagegen_worker import prefetch
from imagegen_worker.pipelines import s3, sources

try:  # the in-memory bucket of the source tests (works with or without tests/__init__.py)
    from .test_pipelines_sources import FakeS3
except ImportError:
    from test_pipelines_sources import FakeS3  # type: ignore[no-redef]


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> FakeS3:
    fake = FakeS3({
        "sdxl/model_index.json": b"{}",
        "sdxl/unet/diffusion_pytorch_model.safetensors": b"w" * 4096,
        "loras/style.safetensors": b"lora",
    })
    monkeypatch.setattr(s3, "client", lambda: fake)
    return fake


def marker(dest: Path, name: str) -> dict:
    return json.loads((dest / ".imagegen-prefetch" / f"{name}.json").read_text())


def test_s3_model_is_downloaded_once_with_progress(
    bucket: FakeS3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["prefetch", "--model", "sdxl", "--source", "s3://weights/sdxl", "--dest", str(tmp_path)]
    assert prefetch.main(argv) == 0
    out = capsys.readouterr().out
    assert "[1/2] s3://weights/sdxl/model_index.json" in out and "2 files downloaded" in out
    first = marker(tmp_path, "sdxl")
    assert first["revision"].startswith("s3:")
    assert Path(first["path"], "unet", "diffusion_pytorch_model.safetensors").is_file()
    # where a worker with the same cache root looks
    assert sources.resolve("s3://weights/sdxl", cache_dir=tmp_path).downloaded_files == 0

    assert prefetch.main(argv) == 0
    assert "0 files downloaded" in capsys.readouterr().out
    assert len(bucket.downloads) == 2
    assert marker(tmp_path, "sdxl")["revision"] == first["revision"]


def test_model_config_json_brings_its_loras(bucket: FakeS3, tmp_path: Path) -> None:
    config = {
        "source": "s3://weights/sdxl",
        "dtype": "float16",
        "loras": [{"name": "style", "source": "s3://weights/loras/style.safetensors"}],
    }
    entry = json.dumps({"name": "sdxl-style", "spec": config})
    assert prefetch.main(["--model-config", entry, "--dest", str(tmp_path)]) == 0
    got = marker(tmp_path, "sdxl-style")
    assert set(got["loras"]) == {"style"} and got["loras"]["style"]["revision"].startswith("s3:")

    config_file = tmp_path / "model.json"
    config_file.write_text(json.dumps(config))
    assert prefetch.main(["--model", "m", "--model-config", f"@{config_file}",
                          "--dest", str(tmp_path)]) == 0
    assert marker(tmp_path, "m")["revision"] == got["revision"]


def test_builtin_needs_no_download_and_is_skipped_the_second_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--source", "builtin://tiny-sdxl", "--dest", str(tmp_path)]
    assert prefetch.main(argv) == 0
    assert "built in code" in capsys.readouterr().out
    assert marker(tmp_path, "tiny-sdxl")["revision"] == "builtin:tiny-sdxl:v1"
    assert prefetch.main(argv) == 0
    assert "already cached" in capsys.readouterr().out


def test_hub_models_pinned_to_a_commit_are_not_looked_up_again(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    pinned = prefetch.ImageModelSpec(source=f"hf://org/repo@{commit}")
    floating = prefetch.ImageModelSpec(source="hf://org/repo@main")
    done = {"source": pinned.source, "revision": f"hf:org/repo@{commit}"}
    assert prefetch._still_valid(done, pinned)
    assert not prefetch._still_valid({**done, "source": floating.source}, floating)
    assert not prefetch._still_valid(done, floating)


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        ([], 2, "give --model-config or --source"),
        (["--source", "ftp://x/y"], 2, "invalid model config"),
        (["--model-config", "{not json"], 2, "prefetch:"),
        (["--source", "file:///nonexistent/model"], 1, "does not exist"),
    ],
)
def test_bad_input_fails_with_a_message(
    argv: list[str], status: int, message: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert prefetch.main([*argv, "--dest", str(tmp_path)]) == status
    assert message in capsys.readouterr().err
