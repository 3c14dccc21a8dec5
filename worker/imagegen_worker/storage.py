"""Object storage (S3 API, boto3 in a thread): content-addressed uploads and presigned GET URLs.

Objects live at <bucket>/<ns>/<pool>/<sha256 of the bytes>.<ext> (naming.object_key), so a
retry or a second worker uploading the same bytes writes the same object. A worker presigns only
keys below its own pool's prefix (pools may share a bucket and credentials). The bucket is created
at start when missing. Credentials come from the standard AWS environment variables (set from the
pool's credentials Secret). Used by the batch runner (upload) and `intake` (URLs for cache hits
and replays).
"""

from __future__ import annotations

import asyncio
import logging
import time

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from imagegen_api import naming
from imagegen_api.workerconfig import StorageSettings

log = logging.getLogger(__name__)


class ForeignObject(ValueError):
    """An object key outside this pool's prefix."""


class ObjectStore:
    def __init__(self, settings: StorageSettings, namespace: str, pool: str,
                 client: BaseClient | None = None) -> None:
        self.bucket = settings.bucket
        self.url_ttl = settings.url_ttl_seconds
        self.namespace = namespace
        self.pool = pool
        self.client = client or boto3.client(
            "s3",
            endpoint_url=settings.endpoint,
            region_name=settings.region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                max_pool_connections=16,
            ),
        )

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL the client talks to (recorded with cache entries)."""
        return str(self.client.meta.endpoint_url)

    def key_for(self, sha256: str, ext: str) -> str:
        return naming.object_key(self.namespace, self.pool, sha256, ext)

    async def ensure_bucket(self) -> None:
        await asyncio.to_thread(self._ensure_bucket)

    def _ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise
        try:
            self.client.create_bucket(Bucket=self.bucket)
            log.info("created bucket %s", self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    async def upload(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(
            self.client.put_object, Bucket=self.bucket, Key=key, Body=data,
            ContentType=content_type,
        )

    async def claim(self, key: str, body: bytes) -> bytes | None:
        """Create `key` with `body` unless it exists (S3 `If-None-Match: *`): None when this call
        created it, else the body that was there first. The first writer wins on every server
        that implements conditional writes (AWS S3, MinIO)."""
        return await asyncio.to_thread(self._claim, key, body)

    def _claim(self, key: str, body: bytes) -> bytes | None:
        for attempt in range(5):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                       ContentType="application/json", IfNoneMatch="*")
                return None
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code == "ConditionalRequestConflict":  # a concurrent write: look again
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if code not in ("PreconditionFailed", "412"):
                    raise
            found = self._get(key)
            if found is not None:
                return found
        raise RuntimeError(f"conditional write of {key!r} kept conflicting")

    async def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        return await asyncio.to_thread(self._get, key)

    def _get(self, key: str) -> bytes | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        data: bytes = obj["Body"].read()
        return data

    def read_head(self, key: str, limit: int) -> bytes | None:
        """At most the first `limit + 1` bytes of an object (more than `limit`: it is too big),
        or None when there is none. Blocking: called from validation threads."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{limit}")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            if code == "InvalidRange":  # an empty object
                return b""
            raise
        data: bytes = obj["Body"].read(limit + 1)
        return data

    def presign(self, key: str) -> str:
        """A GET URL valid for url_ttl_seconds (local signing, no network call). Only for this
        pool's own objects: the credentials may reach other pools' objects in the same bucket,
        and a URL signed with them would hand those out (ForeignObject instead)."""
        prefix = naming.object_prefix(self.namespace, self.pool)
        if not key.startswith(prefix) or ".." in key.split("/"):
            raise ForeignObject(f"refusing to presign {key!r}: not below this pool's "
                                f"prefix {prefix!r}")
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.url_ttl
        )
        return url
