"""s3:// model sources against the local stack's real S3 server (MinIO).

Uses the `stack` fixture (tests/integration/conftest.py) for the endpoint and credentials and a
bucket of its own. Behaviours asserted: a saved tiny pipeline uploaded to S3 loads through
s3:// and draws exactly the builtin's images; a second load is served from the cache (no object
downloaded); changed weights get a new revision and are downloaded again; the prefetch command
fills a cache root that a worker then loads from without downloading.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from imagegen_api import naming
from imagegen_api.specs import ImageModelSpec
from imagegen_worker import prefetch
from imagegen_worker.pipelines import ImageJob, ModelRunner, s3, sources

pytestmark = pytest.mark.integration

SPEC = ImageModelSpec(
    source="builtin://tiny-sdxl", defaults={"width": 64, "height": 64, "steps": 4}
)
JOB = ImageJob("a photo of a cat", "", 64, 64, 4, 7.0, "euler", 42)
PREFIX = "models/tiny-sdxl"


@pytest.fixture
def s3_env(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The worker's S3 settings pointed at the stack; a client that counts downloads."""
    monkeypatch.setenv(naming.ENV_S3_ENDPOINT, stack.s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", stack.s3_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", stack.s3_secret_key)
    real = s3.client()
    counter = DownloadCounter(real)
    monkeypatch.setattr(s3, "client", lambda: counter)
    return counter


class DownloadCounter:
    """The real boto3 client, counting download_file calls."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.downloads = 0

    def download_file(self, *args: Any, **kwargs: Any) -> None:
        self.downloads += 1
        self.client.download_file(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def bucket(s3_env: DownloadCounter) -> Iterator[str]:
    name = f"itest-models-{uuid.uuid4().hex[:8]}"
    s3_env.create_bucket(Bucket=name)
    yield name
    for page in s3_env.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3_env.delete_object(Bucket=name, Key=obj["Key"])
    s3_env.delete_bucket(Bucket=name)


@pytest.fixture(scope="module")
def tiny() -> ModelRunner:
    return ModelRunner.load("tiny", SPEC)


@pytest.fixture
def uploaded(tiny: ModelRunner, bucket: str, s3_env: DownloadCounter, tmp_path: Path) -> str:
    folder = tmp_path / "saved"
    tiny.pipeline.save_pretrained(folder)
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            s3_env.upload_file(str(file), bucket, f"{PREFIX}/{file.relative_to(folder).as_posix()}")
    return f"s3://{bucket}/{PREFIX}"


def image(runner: ModelRunner) -> np.ndarray:
    return np.asarray(runner.generate([JOB])[0])


def test_s3_model_loads_then_comes_from_the_cache(
    tiny: ModelRunner, uploaded: str, s3_env: DownloadCounter, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    spec = SPEC.model_copy(update={"source": uploaded})
    first = ModelRunner.load("s3", spec, cache_dir=str(cache))
    assert first.revision.startswith("s3:")
    assert np.array_equal(image(first), image(tiny))
    fetched = s3_env.downloads
    assert fetched >= 8  # model_index + 7 components' files

    second = ModelRunner.load("s3", spec, cache_dir=str(cache))
    assert s3_env.downloads == fetched, "the second load must not download"
    assert second.revision == first.revision
    assert np.array_equal(image(second), image(tiny))


def test_changed_weights_get_a_new_revision(
    uploaded: str, bucket: str, s3_env: DownloadCounter, tmp_path: Path
) -> None:
    before = sources.resolve(uploaded, cache_dir=tmp_path)
    s3_env.put_object(Bucket=bucket, Key=f"{PREFIX}/scheduler/notes.txt", Body=b"retrained")
    after = sources.resolve(uploaded, cache_dir=tmp_path)
    assert after.revision != before.revision and after.downloaded_files > 0
    assert after.path != before.path and before.path is not None and before.path.exists()


def test_prefetch_fills_the_cache_a_worker_loads_from(
    tiny: ModelRunner, uploaded: str, s3_env: DownloadCounter, tmp_path: Path
) -> None:
    dest = tmp_path / "pvc"
    assert prefetch.main(["--model", "tiny", "--source", uploaded, "--dest", str(dest)]) == 0
    fetched = s3_env.downloads
    spec = SPEC.model_copy(update={"source": uploaded})
    worker = ModelRunner.load("tiny", spec, cache_dir=str(dest))
    assert s3_env.downloads == fetched
    assert np.array_equal(image(worker), image(tiny))
