"""API keys file parsing (imagegen_gateway.keys) and the gateway's settings (settings.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imagegen_api import naming
from imagegen_gateway import keys
from imagegen_gateway.settings import GatewaySettings
from pydantic import ValidationError

PLAIN = "sk-team-a-0123456789abcdef"


def test_plain_keys_are_kept_only_as_digests() -> None:
    ring = keys.parse(json.dumps({"keys": [
        {"name": "team-a", "key": PLAIN, "tiers": ["fast"], "ratePerSecond": 2, "burst": 5},
        {"name": "team-b", "sha256": keys.digest("sk-team-b-0123456789abcdef")},
    ]}))
    assert PLAIN not in repr(ring)
    assert set(ring.by_digest) == {keys.digest(PLAIN), keys.digest("sk-team-b-0123456789abcdef")}
    a = ring.lookup(PLAIN)
    assert a is not None and (a.name, a.rate_per_second, a.burst) == ("team-a", 2, 5)
    assert a.allows("fast") and not a.allows("turbo")
    b = ring.lookup("sk-team-b-0123456789abcdef")
    assert b is not None and b.allows("turbo") and b.allows("relax")  # no tiers: every tier
    assert ring.lookup("sk-unknown-0123456789abcdef") is None


@pytest.mark.parametrize(("entries", "words"), [
    ([{"name": "a"}], "exactly one of key, sha256"),
    ([{"name": "a", "key": PLAIN, "sha256": "0" * 64}], "exactly one of key, sha256"),
    ([{"name": "a", "sha256": "XYZ"}], "64 lowercase hex"),
    ([{"name": "a", "key": "short"}], "at least 16"),
    ([{"name": "a b", "key": PLAIN}], "pattern"),
    ([{"name": "a", "key": PLAIN}, {"name": "a", "key": PLAIN + "x"}], "twice"),
    ([], "at least 1"),
])
def test_bad_key_files_are_refused(entries: list[dict[str, object]], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        keys.parse(json.dumps({"keys": entries}))


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None),
    ("", None), (None, None),
])
def test_bearer(header: str | None, token: str | None) -> None:
    assert keys.bearer(header) == token


def test_settings_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({"worker_config": "/from/file.json", "keys_file": "/k",
                                "port": 9000, "sync_timeout_seconds": 30}))
    s = GatewaySettings.from_env({naming.ENV_GATEWAY_CONFIG: str(path),
                                  naming.ENV_WORKER_CONFIG: "/etc/imagegen/worker.json",
                                  naming.ENV_HTTP_PORT: "8001"})
    assert (s.worker_config, s.keys_file, s.port, s.sync_timeout_seconds) == (
        "/etc/imagegen/worker.json", "/k", 8001, 30)
    assert s.max_body_bytes == naming.MAX_REQUEST_BYTES


def test_settings_refuse_unknown_fields_and_missing_paths(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({"worker_config": "/w", "keys_file": "/k", "colour": 1}))
    with pytest.raises(ValidationError, match="colour"):
        GatewaySettings.from_env({naming.ENV_GATEWAY_CONFIG: str(path)})
    with pytest.raises(ValidationError, match="keys_file"):
        GatewaySettings.from_env({naming.ENV_WORKER_CONFIG: "/w"})
