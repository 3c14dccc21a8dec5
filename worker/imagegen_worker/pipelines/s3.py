"""s3:// model sources: download a prefix once into the model cache, keyed by its ETags.

The cache folder is `<root>/s3/<bucket>/<prefix>/<digest>` where the digest covers every object's
relative key, size and ETag, so changed weights land in a new folder and unchanged ones are never
fetched twice (one LIST call decides). A download goes to a `.partial` sibling first and is renamed
into place when complete, so a killed worker or Job never leaves a half folder that looks done.
If S3 cannot be listed, the newest complete copy in the cache is used (with a warning), so a
prefetched volume keeps workers starting while S3 is down.

Endpoint from $IMAGEGEN_S3_ENDPOINT (empty: AWS), credentials and region from the usual AWS_*
variables.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from imagegen_api import naming

from .sources import LocalWeights, Progress, Source

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".imagegen-complete.json"


@dataclass(frozen=True)
class RemoteObject:
    key: str
    rel: str  # path below the prefix, "/"-separated
    size: int
    etag: str


def client() -> Any:
    """A boto3 S3 client for $IMAGEGEN_S3_ENDPOINT (path-style, as MinIO wants)."""
    endpoint = os.environ.get(naming.ENV_S3_ENDPOINT) or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5})
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def fetch(
    src: Source, root: Path, *, s3: Any | None = None, progress: Progress | None = None
) -> LocalWeights:
    """Local copy of s3://bucket/prefix under `root`, downloading only what the cache lacks."""
    s3 = s3 or client()
    base = root / "s3" / src.location / _safe_rel(src.path.strip("/") or "_root")
    try:
        objects = list_objects(s3, src.location, src.path)
    except (BotoCoreError, ClientError) as err:
        cached = newest_complete(base)
        if cached is None:
            raise
        log.warning("cannot list s3://%s/%s (%s): using cached %s", src.location, src.path,
                    err, cached)
        return LocalWeights(src, _payload(cached), f"s3:{cached.name}")
    digest = etag_digest(objects)
    dest = base / digest
    if (dest / COMPLETE_MARKER).exists():
        log.info("s3://%s/%s: cached at %s", src.location, src.path, dest)
        return LocalWeights(src, _payload(dest), f"s3:{digest}")
    single = objects[0].rel if objects[0].key == src.path.strip("/") else None
    _download(s3, src.location, objects, dest, single, progress)
    return LocalWeights(src, _payload(dest), f"s3:{digest}", downloaded_files=len(objects))


def list_objects(s3: Any, bucket: str, prefix: str) -> list[RemoteObject]:
    """Objects below the prefix (a folder), or the one object the prefix names (a file)."""
    folder = prefix.strip("/")
    folder = f"{folder}/" if folder else ""
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/"):
                continue  # folder placeholder objects
            rel = obj["Key"][len(folder):]
            objects.append(RemoteObject(obj["Key"], rel, obj["Size"], obj["ETag"].strip('"')))
    if not objects and folder:
        head = s3.head_object(Bucket=bucket, Key=prefix.strip("/"))
        name = PurePosixPath(prefix.strip("/")).name
        objects.append(RemoteObject(prefix.strip("/"), name, head["ContentLength"],
                                    head["ETag"].strip('"')))
    if not objects:
        raise FileNotFoundError(f"s3://{bucket}/{prefix}: no objects")
    return sorted(objects, key=lambda o: o.rel)


def etag_digest(objects: list[RemoteObject]) -> str:
    """Stable id of a prefix's content: relative keys, sizes and ETags."""
    h = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.rel):
        h.update(f"{obj.rel}\0{obj.size}\0{obj.etag}\n".encode())
    return h.hexdigest()[:16]


def newest_complete(base: Path) -> Path | None:
    """The most recently completed cached copy below `base`, if any."""
    done = [p.parent for p in base.glob(f"*/{COMPLETE_MARKER}")]
    return max(done, key=lambda p: (p / COMPLETE_MARKER).stat().st_mtime, default=None)


def _payload(dest: Path) -> Path:
    """The folder itself, or the single file when the source named one object (a LoRA file)."""
    marker = json.loads((dest / COMPLETE_MARKER).read_text())
    return dest / marker["file"] if marker.get("file") else dest


def _download(
    s3: Any,
    bucket: str,
    objects: list[RemoteObject],
    dest: Path,
    single: str | None,
    progress: Progress | None,
) -> None:
    partial = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    total = sum(o.size for o in objects)
    done = 0
    try:
        for i, obj in enumerate(objects, 1):
            target = partial / _safe_rel(obj.rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj.key, str(target))
            done += obj.size
            if progress:
                progress(f"[{i}/{len(objects)}] s3://{bucket}/{obj.key} "
                         f"({done / 2**20:.1f}/{total / 2**20:.1f} MiB)")
        marker = {"objects": [o.__dict__ for o in objects], "file": single}
        (partial / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1))
        if dest.exists():  # another process finished the same digest first
            shutil.rmtree(partial)
        else:
            partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("s3://%s: %d files (%.1f MiB) downloaded to %s", bucket, len(objects),
             total / 2**20, dest)


def _safe_rel(rel: str) -> Path:
    """A relative path that stays below its folder (refuses '..' and absolute keys)."""
    parts = PurePosixPath(rel).parts
    if not parts or any(p in ("..", "") for p in parts) or PurePosixPath(rel).is_absolute():
        raise ValueError(f"unsafe object path {rel!r}")
    return Path(*parts)
