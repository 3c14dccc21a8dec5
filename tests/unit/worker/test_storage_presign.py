"""A worker presigns only its own pool's objects (issue 17, isolation): pools may share a bucket
and credentials, so a URL signed for another pool's key would hand that object out.

Signing is local (no network): a real boto3 client pointed at an address nothing listens on.
"""

from __future__ import annotations

import boto3
import pytest
from imagegen_api.workerconfig import StorageSettings
from imagegen_worker.storage import ForeignObject, ObjectStore


@pytest.fixture
def store() -> ObjectStore:
    client = boto3.client("s3", endpoint_url="http://127.0.0.1:1", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="y")
    return ObjectStore(StorageSettings(bucket="shared"), "ns", "a", client=client)


def test_own_objects_are_presigned(store: ObjectStore) -> None:
    url = store.presign(store.key_for("f" * 64, "png"))
    assert url.startswith("http://127.0.0.1:1/shared/ns/a/") and "Signature" in url
    assert store.endpoint == "http://127.0.0.1:1"


@pytest.mark.parametrize("key", ["ns/b/" + "f" * 64 + ".png", "other/a/x.png", "ns/a/../b/x.png",
                                 "x.png", "ns/ab/x.png"])
def test_other_pools_objects_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ForeignObject, match="not below this pool's prefix 'ns/a/'"):
        store.presign(key)
