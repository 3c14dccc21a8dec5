"""Model sources without servers: URI parsing, content revisions, the S3 cache, hub file choice.

What it fakes: the S3 client (an in-memory bucket that counts downloads) and the Hugging Face
cache (a snapshot folder laid out as huggingface_hub writes it, used offline). What it asserts:
where each source lands, that revisions follow content, that a cached prefix is never downloaded
twice, and that s3:// and hf:// copies of the tiny pipeline draw the builtin's images.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from huggingface_hub import constants as hf_constants
from imagegen_api.specs import ImageModelSpec
from imagegen_worker.pipelines import ImageJob, ModelRunner, hf, s3, sources

SPEC = ImageModelSpec(
    source="builtin://tiny-sdxl", defaults={"width": 64, "height": 64, "steps": 4}
)
JOB = ImageJob("a photo of a cat", "", 64, 64, 4, 7.0, "euler", 42)


class FakeS3:
    """Just the S3 calls the source uses, over an in-memory bucket."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.downloads: list[str] = []
        self.reachable = True
        self.fail_after: int | None = None

    def get_paginator(self, name: str) -> FakeS3:
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str) -> Iterator[dict[str, Any]]:
        if not self.reachable:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        keys = sorted(k for k in self.objects if k.startswith(Prefix))
        yield {"Contents": [self._meta(k) | {"Key": k} for k in keys]}

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        meta = self._meta(Key)
        return {"ContentLength": meta["Size"], "ETag": meta["ETag"]}

    def download_file(self, Bucket: str, Key: str, Filename: str) -> None:
        if self.fail_after is not None and len(self.downloads) >= self.fail_after:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        Path(Filename).write_bytes(self.objects[Key])
        self.downloads.append(Key)

    def _meta(self, key: str) -> dict[str, Any]:
        data = self.objects[key]
        return {"Size": len(data), "ETag": f'"{hashlib.md5(data).hexdigest()}"'}


def upload_folder(folder: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{p.relative_to(folder).as_posix()}": p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


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


# --- S3 ----------------------------------------------------------------------------------------


def test_s3_prefix_is_downloaded_once_and_keyed_by_etags(tmp_path: Path) -> None:
    fake = FakeS3({"m/a/model_index.json": b"{}", "m/a/unet/w.bin": b"1", "m/b/x": b"2"})
    src = sources.parse_source("s3://bucket/m/a")
    lines: list[str] = []
    first = s3.fetch(src, tmp_path, s3=fake, progress=lines.append)
    assert first.downloaded_files == 2 and len(lines) == 2
    assert first.path == tmp_path / "s3" / "bucket" / "m" / "a" / first.revision[3:]
    assert (first.path / "unet" / "w.bin").read_bytes() == b"1"
    assert not (first.path / "x").exists()

    again = s3.fetch(src, tmp_path, s3=fake)
    assert again == sources.LocalWeights(src, first.path, first.revision, downloaded_files=0)
    assert len(fake.downloads) == 2

    fake.objects["m/a/unet/w.bin"] = b"new weights"
    changed = s3.fetch(src, tmp_path, s3=fake)
    assert changed.revision != first.revision and changed.downloaded_files == 2


def test_s3_unreachable_falls_back_to_the_newest_cached_copy(tmp_path: Path) -> None:
    fake = FakeS3({"m/model_index.json": b"{}"})
    src = sources.parse_source("s3://bucket/m")
    cached = s3.fetch(src, tmp_path, s3=fake)
    fake.reachable = False
    assert s3.fetch(src, tmp_path, s3=fake).path == cached.path
    with pytest.raises(EndpointConnectionError):
        s3.fetch(src, tmp_path / "empty", s3=fake)


def test_s3_interrupted_download_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    fake = FakeS3({"m/a": b"1", "m/b": b"2", "m/c": b"3"})
    fake.fail_after = 1
    src = sources.parse_source("s3://bucket/m")
    with pytest.raises(EndpointConnectionError):
        s3.fetch(src, tmp_path, s3=fake)
    assert list((tmp_path / "s3" / "bucket" / "m").iterdir()) == []
    fake.fail_after = None
    assert s3.fetch(src, tmp_path, s3=fake).downloaded_files == 3


def test_s3_source_naming_one_object_resolves_to_that_file(tmp_path: Path) -> None:
    fake = FakeS3({"loras/style.safetensors": b"lora"})
    weights = s3.fetch(sources.parse_source("s3://bucket/loras/style.safetensors"), tmp_path,
                       s3=fake)
    assert weights.path is not None and weights.path.name == "style.safetensors"
    assert weights.path.read_bytes() == b"lora"


def test_s3_keys_that_escape_the_cache_are_refused(tmp_path: Path) -> None:
    fake = FakeS3({"m/../../etc/passwd": b"x"})
    with pytest.raises(ValueError, match="unsafe"):
        s3.fetch(sources.parse_source("s3://bucket/m"), tmp_path, s3=fake)


def test_s3_copy_of_the_tiny_pipeline_draws_the_builtin_images(
    tiny: ModelRunner, saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeS3(upload_folder(saved, "models/tiny-sdxl"))
    monkeypatch.setattr(s3, "client", lambda: fake)
    spec = SPEC.model_copy(update={"source": "s3://weights/models/tiny-sdxl"})
    loaded = ModelRunner.load("s3", spec, cache_dir=str(tmp_path))
    assert loaded.revision.startswith("s3:")
    assert np.array_equal(np.asarray(loaded.generate([JOB])[0]),
                          np.asarray(tiny.generate([JOB])[0]))
    downloads = len(fake.downloads)
    assert ModelRunner.load("s3", spec, cache_dir=str(tmp_path)).revision == loaded.revision
    assert len(fake.downloads) == downloads, "second load must come from the cache"


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
