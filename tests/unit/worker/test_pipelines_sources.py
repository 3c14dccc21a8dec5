"""Model sources without servers: URI parsing, content revisions, the S3 cache fallback and key
safety, hub file choice.

Nothing is faked: the Hugging Face cache is a snapshot folder laid out as huggingface_hub writes
it (used offline), and the S3 fallback uses a real boto3 client whose endpoint does not answer.
Downloads from a real S3 server (MinIO) are tested in tests/integration/test_model_sources.py
(load, cache reuse, changed weights → new revision, prefetch) and
tests/integration/worker/test_model_sources_s3.py (one-object sources, interrupted downloads).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from huggingface_hub import constants as hf_constants
from imagegen_api.specs import ImageModelSpec
from imagegen_worker.pipelines import ImageJob, ModelRunner, hf, s3, sources

SPEC = ImageModelSpec(
    source="builtin://tiny-sdxl", defaults={"width": 64, "height": 64, "steps": 4}
)
JOB = ImageJob("a photo of a cat", "", 64, 64, 4, 7.0, "euler", 42)


@pytest.fixture(scope="module")
def tiny() -> ModelRunner:
    return ModelRunner.load("tiny", SPEC)


@pytest.fixture(scope="module")
def saved(tiny: ModelRunner, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "tiny-sdxl"
    tiny.pipeline.save_pretrained(folder)
    return folder


# --- URIs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("builtin://tiny-sdxl", sources.Source("builtin", "tiny-sdxl")),
        ("file:///srv/models/sdxl", sources.Source("file", "/srv/models/sdxl")),
        ("pvc://models/sdxl/base", sources.Source("pvc", "models", "sdxl/base")),
        ("pvc://models", sources.Source("pvc", "models", "")),
        ("s3://weights/sdxl/base/", sources.Source("s3", "weights", "sdxl/base/")),
        ("hf://org/repo", sources.Source("hf", "org/repo")),
        ("hf://org/repo@v1.0", sources.Source("hf", "org/repo", revision="v1.0")),
        ("hf://org/repo@refs/pr/1", sources.Source("hf", "org/repo", revision="refs/pr/1")),
    ],
)
def test_source_uris_parse(uri: str, expected: sources.Source) -> None:
    assert sources.parse_source(uri) == expected


@pytest.mark.parametrize("uri", ["builtin://big-sdxl", "file://relative/dir", "gs://b/p", "x"])
def test_unknown_or_malformed_sources_are_refused(uri: str) -> None:
    with pytest.raises(ValueError):
        sources.parse_source(uri)


def test_model_root_is_the_argument_then_the_environment_then_slash_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IMAGEGEN_MODEL_CACHE", raising=False)
    assert sources.model_root() == Path("/models")
    monkeypatch.setenv("IMAGEGEN_MODEL_CACHE", "/cache")
    assert sources.model_root() == Path("/cache")
    assert sources.model_root("/explicit") == Path("/explicit")


def test_content_revision_follows_content_only(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "unet" / "w.safetensors").write_bytes(b"weights")
    first = sources.content_revision(tmp_path)
    (tmp_path / ".imagegen-prefetch.json").write_text("marker")  # hidden files do not count
    assert sources.content_revision(tmp_path) == first
    (tmp_path / "unet" / "w.safetensors").write_bytes(b"other weights")
    assert sources.content_revision(tmp_path) != first
    assert sources.content_revision(tmp_path / "model_index.json").startswith("sha256:")


# --- local sources stay confined (issue 17: pvc://claim/../.. and file:///dev/zero) ------------


@pytest.mark.parametrize("uri", ["pvc://claim/../..", "pvc://claim/a/../../b",
                                 "pvc://claim/%2e%2e/etc", "file:///srv/../etc",
                                 "file:///dev/zero", "file:///proc/self", "file:///sys"])
def test_escaping_or_kernel_sources_are_refused_when_parsed(uri: str) -> None:
    with pytest.raises(sources.UnsafeSource, match=r"'\.\.' path segment|/dev, /proc or /sys"):
        sources.parse_source(uri)


def test_a_pvc_path_that_leaves_the_cache_root_through_a_symlink_is_refused(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "model_index.json").write_text("{}")
    (root / "link").symlink_to(outside)
    with pytest.raises(sources.UnsafeSource, match="outside the model cache root"):
        sources.resolve("pvc://claim/link", cache_dir=root)


def test_devices_and_fifos_are_refused_not_read(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model_index.json").write_text("{}")
    (weights / "zero.safetensors").symlink_to("/dev/zero")  # would hash forever
    with pytest.raises(sources.UnsafeSource, match="character device"):
        sources.resolve(f"file://{weights}")
    (weights / "zero.safetensors").unlink()
    os.mkfifo(weights / "pipe.bin")  # would block forever on open
    with pytest.raises(sources.UnsafeSource, match="fifo"):
        sources.resolve(f"file://{weights}")
    (weights / "pipe.bin").unlink()
    assert sources.resolve(f"file://{weights}").revision.startswith("sha256:")


def test_a_source_over_the_size_bound_is_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "w.bin").write_bytes(b"x" * 100)
    monkeypatch.setattr(sources, "MAX_SOURCE_BYTES", 99)
    with pytest.raises(sources.UnsafeSource, match="MAX_SOURCE_BYTES=99"):
        sources.content_revision(tmp_path)
    monkeypatch.setattr(sources, "MAX_SOURCE_BYTES", 100)
    monkeypatch.setattr(sources, "MAX_SOURCE_FILES", 0)
    with pytest.raises(sources.UnsafeSource, match="MAX_SOURCE_FILES=0"):
        sources.content_revision(tmp_path)


def test_a_file_longer_than_its_reported_size_is_refused() -> None:
    # procfs reports size 0 for files that do have content; reading is bounded by the size.
    with pytest.raises(sources.UnsafeSource, match="longer than its reported size"):
        sources.content_revision(Path("/proc/self/status"))


# --- S3 ----------------------------------------------------------------------------------------


def unreachable_s3() -> Any:
    """A real boto3 client for an endpoint where nothing listens (connection refused)."""
    return boto3.client(
        "s3", endpoint_url="http://127.0.0.1:1", region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="y",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1,
                      s3={"addressing_style": "path"}))


def test_s3_unreachable_falls_back_to_the_newest_cached_copy(tmp_path: Path) -> None:
    base = tmp_path / "s3" / "bucket" / "m"
    for digest, age in (("older", 100), ("newer", 50)):
        copy = base / digest
        copy.mkdir(parents=True)
        (copy / "model_index.json").write_text("{}")
        marker = copy / s3.COMPLETE_MARKER
        marker.write_text(json.dumps({"objects": [], "file": None}))
        os.utime(marker, (time.time() - age, time.time() - age))
    (base / "newest.partial-1").mkdir()  # an interrupted download is never used
    src = sources.parse_source("s3://bucket/m")
    weights = s3.fetch(src, tmp_path, s3=unreachable_s3())
    assert weights.path == base / "newer" and weights.revision == "s3:newer"
    with pytest.raises(EndpointConnectionError):
        s3.fetch(src, tmp_path / "empty", s3=unreachable_s3())


@pytest.mark.parametrize("rel", ["../../etc/passwd", "a/../../b", "/abs/path", ""])
def test_s3_keys_that_escape_the_cache_are_refused(rel: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        s3._safe_rel(rel)


def test_s3_keys_below_the_prefix_map_to_relative_paths() -> None:
    assert s3._safe_rel("unet/w.safetensors") == Path("unet") / "w.safetensors"


# --- Hugging Face Hub ----------------------------------------------------------------------------

SDXL_REPO_FILES = [
    ".gitattributes", "README.md", "model_index.json", "sd_xl_base_1.0.safetensors",
    "sd_xl_base_1.0_0.9vae.safetensors", "scheduler/scheduler_config.json",
    "text_encoder/config.json", "text_encoder/model.safetensors",
    "text_encoder/model.fp16.safetensors", "text_encoder/model.onnx",
    "text_encoder/flax_model.msgpack", "tokenizer/merges.txt", "tokenizer/vocab.json",
    "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    "vae_decoder/model.onnx", "vae_decoder/config.json",
]


def test_hub_files_are_the_pipeline_ones_in_the_right_variant() -> None:
    half = hf.select_files(SDXL_REPO_FILES, "fp16")
    assert half == [
        "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors", "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json", "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors", "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors", "vae_decoder/config.json",
    ]
    full = hf.select_files(SDXL_REPO_FILES)
    assert "unet/diffusion_pytorch_model.safetensors" in full
    assert not any(f.endswith((".bin", ".onnx", ".msgpack")) or ".fp16." in f for f in full)


def test_hub_lora_repos_get_their_root_weights() -> None:
    files = ["README.md", "pytorch_lora_weights.safetensors", "image.png", "samples/a.png"]
    assert hf.select_files(files) == ["pytorch_lora_weights.safetensors"]


def test_hf_snapshot_in_the_cache_loads_offline(
    tiny: ModelRunner, saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--imagegen--tiny-sdxl"
    shutil.copytree(saved, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    spec = SPEC.model_copy(update={"source": "hf://imagegen/tiny-sdxl"})
    loaded = ModelRunner.load("hf", spec, cache_dir=str(tmp_path))
    assert loaded.revision == f"hf:imagegen/tiny-sdxl@{commit}"
    assert np.array_equal(np.asarray(loaded.generate([JOB])[0]),
                          np.asarray(tiny.generate([JOB])[0]))
    pinned = SPEC.model_copy(update={"source": f"hf://imagegen/tiny-sdxl@{commit}"})
    assert ModelRunner.load("hf", pinned, cache_dir=str(tmp_path)).revision == loaded.revision
