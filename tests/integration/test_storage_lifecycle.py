"""storage.retentionDays: the worker's S3 lifecycle rule, read back from the local MinIO.

Two pools share one bucket: each sets, changes and removes only its own rule."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from imagegen_api import naming
from imagegen_worker import lifecycle

from tests.integration.conftest import StackEnv


@pytest.fixture
def s3(stack: StackEnv) -> Any:
    return boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=stack.s3_access_key,
                        aws_secret_access_key=stack.s3_secret_key)


def rules(s3: Any, bucket: str) -> dict[str, tuple[str, int]]:
    """Rule ID → (prefix, days) as MinIO returns them."""
    try:
        got = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"
        return {}
    return {r["ID"]: ((r.get("Filter") or {}).get("Prefix", r.get("Prefix")),
                      r["Expiration"]["Days"]) for r in got if r["Status"] == "Enabled"}


def ensure(s3: Any, bucket: str, pool: str, days: int | None) -> bool:
    return lifecycle.ensure_retention(s3, bucket, "team", pool,
                                      naming.object_prefix("team", pool), days)


def test_each_pool_sets_changes_and_removes_only_its_own_rule(s3: Any, s3_bucket: str) -> None:
    p1, p2 = lifecycle.rule_id("team", "p1"), lifecycle.rule_id("team", "p2")
    assert rules(s3, s3_bucket) == {}
    assert ensure(s3, s3_bucket, "p1", 7)
    assert rules(s3, s3_bucket) == {p1: ("team/p1/", 7)}
    assert ensure(s3, s3_bucket, "p2", 30)
    assert rules(s3, s3_bucket) == {p1: ("team/p1/", 7), p2: ("team/p2/", 30)}
    assert ensure(s3, s3_bucket, "p1", 7)  # a second worker of p1: nothing to change
    assert ensure(s3, s3_bucket, "p1", 1)
    assert rules(s3, s3_bucket) == {p1: ("team/p1/", 1), p2: ("team/p2/", 30)}
    assert ensure(s3, s3_bucket, "p1", None)  # retentionDays removed from p1
    assert rules(s3, s3_bucket) == {p2: ("team/p2/", 30)}
    assert ensure(s3, s3_bucket, "p2", None)
    assert rules(s3, s3_bucket) == {}


def test_a_persons_rule_on_the_bucket_is_kept(s3: Any, s3_bucket: str) -> None:
    theirs = {"ID": "logs-90d", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
              "Expiration": {"Days": 90}}
    s3.put_bucket_lifecycle_configuration(Bucket=s3_bucket,
                                          LifecycleConfiguration={"Rules": [theirs]})
    assert ensure(s3, s3_bucket, "p1", 14)
    assert rules(s3, s3_bucket) == {"logs-90d": ("logs/", 90),
                                    lifecycle.rule_id("team", "p1"): ("team/p1/", 14)}
    assert ensure(s3, s3_bucket, "p1", None)
    assert rules(s3, s3_bucket) == {"logs-90d": ("logs/", 90)}
