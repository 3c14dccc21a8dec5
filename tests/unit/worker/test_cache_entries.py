"""Cache entries are read strictly and only where they can be served (issue 17, isolation).

Pure: `CachedImage.from_json` and `ImageCache._usable` on literal entries. An entry that does not
parse exactly, points outside this pool's objects, or lives in another bucket or behind another
endpoint is a miss (regenerate, overwrite), never an answer with a URL that cannot work or that
hands out another pool's object.
"""

from __future__ import annotations

import json

import pytest
from imagegen_worker.cache import CachedImage, ImageCache
from imagegen_worker.metrics import WorkerMetrics

GOOD = {"key": "ns/p/" + "a" * 64 + ".png", "sha256": "a" * 64, "size": 10, "seed": 1,
        "width": 64, "height": 64, "format": "png", "bucket": "b", "endpoint": "http://s3:9000"}


def cache(**kw: str) -> ImageCache:
    where = {"namespace": "ns", "pool": "p", "bucket": "b", "endpoint": "http://s3:9000", **kw}
    return ImageCache(None, ttl_seconds=60, metrics=WorkerMetrics(), **where)


def test_a_well_formed_entry_of_this_pool_is_a_hit() -> None:
    assert cache()._usable(json.dumps(GOOD)) == CachedImage(**GOOD)


@pytest.mark.parametrize(("change", "why"), [
    ({"sha256": "x"}, "digest not 64 hex"),
    ({"format": "gif"}, "unknown format"),
    ({"width": "64"}, "a string where a number belongs (strict)"),
    ({"size": -1}, "negative size"),
    ({"extra": 1}, "unknown field"),
    ({"key": ""}, "empty key"),
])
def test_malformed_entries_are_misses(change: dict[str, object], why: str) -> None:
    assert cache()._usable(json.dumps({**GOOD, **change})) is None, why


def test_unparseable_bytes_are_a_miss() -> None:
    assert cache()._usable(b"{broken") is None
    assert cache()._usable(b"\xff\xfe") is None


@pytest.mark.parametrize(("where", "why"), [
    ({"bucket": "other"}, "the pool's bucket changed"),
    ({"endpoint": "https://s3.amazonaws.com"}, "the pool's endpoint changed"),
    ({"pool": "q"}, "another pool's object in the same bucket"),
    ({"namespace": "other"}, "another namespace's object"),
])
def test_entries_pointing_elsewhere_are_misses(where: dict[str, str], why: str) -> None:
    assert cache(**where)._usable(json.dumps(GOOD)) is None, why


def test_per_pool_keys() -> None:
    assert cache().key("d") == "imagegen:cache:ns/p/d"
    assert cache(pool="q").key("d") != cache().key("d")
