"""Storage lifecycle: the S3 rule that expires a pool's objects after `storage.retentionDays`.

A bucket has one lifecycle configuration shared by every pool that writes to it, so the worker
reads it, replaces or removes only its own rule (ID ``imagegen:<namespace>/<pool>``, filter on
the pool's prefix) and writes it back — other rules, ours or a person's, are kept as they are.
Two pools' workers starting at once may race (S3 has no conditional lifecycle write): the write
is read back and made again, up to ATTEMPTS times.

`app` calls `ensure_retention` once at start, after the bucket exists; a failure is logged, never
fatal (images are still stored; the rule is set by the next worker that starts). `plan` is pure
and unit-tested; `ensure_retention` is tested against the local MinIO.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

ATTEMPTS = 3
Rule = dict[str, Any]


def rule_id(namespace: str, pool: str) -> str:
    return f"imagegen:{namespace}/{pool}"


def rule(namespace: str, pool: str, prefix: str, days: int) -> Rule:
    return {"ID": rule_id(namespace, pool), "Status": "Enabled",
            "Filter": {"Prefix": prefix}, "Expiration": {"Days": days}}


def plan(existing: list[Rule], wanted: Rule | None, rid: str) -> list[Rule] | None:
    """The bucket's rules with ours replaced (or removed when `wanted` is None); None when they
    already are as wanted (no write)."""
    others = [r for r in existing if r.get("ID") != rid]
    ours = [r for r in existing if r.get("ID") == rid]
    if wanted is None:
        return others if ours else None
    if len(ours) == 1 and _meaning(ours[0]) == _meaning(wanted):
        return None
    return [*others, wanted]


def _meaning(r: Rule) -> tuple[object, object, object]:
    """What a rule does, whatever extra fields or legacy shape the server returns it in."""
    prefix = (r.get("Filter") or {}).get("Prefix", r.get("Prefix"))
    return r.get("Status"), prefix, (r.get("Expiration") or {}).get("Days")


def _read(client: Any, bucket: str) -> list[Rule]:
    try:
        return list(client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", []))
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) == "NoSuchLifecycleConfiguration":
            return []
        raise


def _write(client: Any, bucket: str, rules: list[Rule]) -> None:
    if rules:
        client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    else:
        client.delete_bucket_lifecycle(Bucket=bucket)


def ensure_retention(client: Any, bucket: str, namespace: str, pool: str, prefix: str,
                     days: int | None) -> bool:
    """Set (or remove, `days` None) the pool's expiration rule; True when the bucket holds what
    was asked. Blocking (boto3): run it in a thread."""
    rid = rule_id(namespace, pool)
    wanted = rule(namespace, pool, prefix, days) if days is not None else None
    for _ in range(ATTEMPTS):
        rules = plan(_read(client, bucket), wanted, rid)
        if rules is None:
            return True
        _write(client, bucket, rules)
        log.info("storage lifecycle %s on %s/%s", f"set to {days} days" if days else "removed",
                 bucket, prefix)
    return plan(_read(client, bucket), wanted, rid) is None
