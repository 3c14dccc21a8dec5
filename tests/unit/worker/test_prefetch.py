"""`imagegen-worker prefetch` on a temporary cache root, without servers and no hub.

What it asserts: builtin and pinned hub models need no download, and bad input or a missing
source fails with a message and a non-zero status (2 for a source refused as unsafe: a `..`
escape, a device). Prefetching from S3 runs against the real
MinIO in tests/integration/worker/test_model_sources_s3.py and test_model_sources.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imagegen_worker import prefetch


def marker(dest: Path, name: str) -> dict:
    return json.loads((dest / ".imagegen-prefetch" / f"{name}.json").read_text())


def test_builtin_needs_no_download_and_is_skipped_the_second_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--source", "builtin://tiny-sdxl", "--dest", str(tmp_path)]
    assert prefetch.main(argv) == 0
    assert "built in code" in capsys.readouterr().out
    assert marker(tmp_path, "tiny-sdxl")["revision"] == "builtin:tiny-sdxl:v2"
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
        (["--source", "pvc://claim/../.."], 2, "'..' path segment is not allowed"),
        (["--source", "file:///dev/zero"], 2, "may not read /dev, /proc or /sys"),
    ],
)
def test_bad_input_fails_with_a_message(
    argv: list[str], status: int, message: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert prefetch.main([*argv, "--dest", str(tmp_path)]) == status
    assert message in capsys.readouterr().err


def test_a_source_holding_a_device_fails_as_bad_input_without_reading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "unet.safetensors").symlink_to("/dev/zero")
    argv = ["--source", f"file://{weights}", "--dest", str(tmp_path / "cache")]
    assert prefetch.main(argv) == 2
    assert "is a character device" in capsys.readouterr().err
