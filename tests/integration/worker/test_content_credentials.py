"""Content Credentials end to end: a pool with output.contentCredentials set signs every image
it stores. A real worker process (the key mounted as the operator mounts the Secret, here a
folder named by IMAGEGEN_CONTENT_CREDENTIALS_DIR) serves requests through Kafka; the images
downloaded from S3 carry a C2PA manifest the C2PA reader validates, with the request's seed
and id."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from imagegen_api import naming
from imagegen_api.messages import GenerationRequest
from imagegen_api.specs import ContentCredentialsSpec, OutputSpec
from imagegen_client import new_request_id
from imagegen_worker.content_credentials import TRAINED_ALGORITHMIC_MEDIA, read_manifest

from dev.localstack import signing
from tests.integration.worker.harness import Pool, make_pool

pytestmark = pytest.mark.integration


async def signing_pool(stack: Any, tmp_path: Path, label: str, keys: Path,
                       monkeypatch: pytest.MonkeyPatch) -> Pool:
    """A pool with output.contentCredentials set; its workers find the key in `keys`, as the
    operator mounts the Secret."""
    monkeypatch.setenv(naming.ENV_CONTENT_CREDENTIALS_DIR, str(keys))
    pool = await make_pool(stack, tmp_path, label)
    pool.config = pool.config.model_copy(update={"output": OutputSpec(
        content_credentials=ContentCredentialsSpec(secret_name="signer"))})
    await asyncio.to_thread(pool.config_path.write_text, pool.config.dump_json())
    return pool


async def test_every_stored_image_carries_a_valid_signed_manifest(
        stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = signing.make_chain("imagegen itest signer").write(tmp_path / "credentials")
    pool = await signing_pool(stack, tmp_path, "c2pa", keys, monkeypatch)
    try:
        worker = await pool.spawn()
        requests = [GenerationRequest(request_id=new_request_id("c2pa"), model="tiny",
                                      tier="fast", seed=40 + i, prompt=f"signed {fmt}",
                                      output_format=fmt)
                    for i, fmt in enumerate(("png", "webp", "jpeg"))]
        async with pool.client() as client:
            results = await client.generate(requests, within=120)
            ordered = [results[r.request_id] for r in requests]
            for result in ordered:
                assert result.status == "succeeded", result
            paths = await client.download(ordered, tmp_path / "out")
        loaded = [line for line in worker.log_lines()
                  if line.get("msg") == "content credentials loaded"]
        assert loaded and loaded[0].get("algorithm") == "ES256", worker.tail()
    finally:
        await asyncio.to_thread(pool.stop_all)
    for req, result, path in zip(requests, ordered, paths, strict=True):
        (image,) = result.images
        content_type = f"image/{req.output_format}"
        manifest, state = read_manifest(path.read_bytes(), content_type)
        assert state == "Valid", (req.output_format, state)
        assert manifest is not None
        (action,) = manifest["assertions"][0]["data"]["actions"]
        assert action["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
        assert action["parameters"]["seed"] == image.seed == req.seed
        assert action["parameters"]["request_id"] == req.request_id


async def test_a_key_that_cannot_sign_stops_the_worker_naming_the_file(
        stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = signing.make_chain().write(tmp_path / "credentials")
    (keys / "tls.key").unlink()  # a Secret without the key
    pool = await signing_pool(stack, tmp_path, "c2pa-bad", keys, monkeypatch)
    try:
        worker = pool.start_worker()
        code = await asyncio.to_thread(worker.proc.wait, 120)
        assert code == 1, worker.tail()
        assert "tls.key" in worker.tail() and "must hold tls.crt and tls.key" in worker.tail()
    finally:
        await asyncio.to_thread(pool.stop_all)
