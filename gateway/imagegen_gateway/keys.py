"""API keys from a mounted file (a Kubernetes Secret): JSON
`{"keys": [{"name": "team-a", "key": "sk-…" | "sha256": "<hex>", "tiers": ["fast"],
"ratePerSecond": 2, "burst": 10, "webhookSecret": "whsec-…"}]}`. Only sha256 digests are kept
in memory; a plain key is hashed as the file is parsed and dropped. `webhookSecret` (≥ 16
characters) signs that key's webhooks (webhooks.sign); a key without one cannot ask for webhooks.
`tiers` absent or empty: every tier of the pool.

Pure: parsed by `main` at start, looked up by the app for each request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class _KeyEntry(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9._-]+$")
    key: str | None = Field(None, min_length=16)
    sha256: str | None = None
    tiers: list[str] = Field(default_factory=list)
    rate_per_second: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)
    webhook_secret: str | None = Field(None, min_length=16, max_length=256)

    @model_validator(mode="after")
    def _one_secret(self) -> _KeyEntry:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"key {self.name!r}: give exactly one of key, sha256")
        if self.sha256 is not None and not _HEX64.match(self.sha256):
            raise ValueError(f"key {self.name!r}: sha256 must be 64 lowercase hex digits")
        return self


class _KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[_KeyEntry] = Field(min_length=1)


@dataclass(frozen=True)
class ApiKey:
    name: str
    tiers: frozenset[str]  # empty: every tier
    rate_per_second: float | None
    burst: int | None
    webhook_secret: str | None = None

    def allows(self, tier: str) -> bool:
        return not self.tiers or tier in self.tiers


@dataclass(frozen=True)
class KeyRing:
    by_digest: Mapping[str, ApiKey]

    def lookup(self, presented: str) -> ApiKey | None:
        """The key whose digest matches (compared in constant time), or None."""
        d = digest(presented)
        for known, key in self.by_digest.items():
            if hmac.compare_digest(known, d):
                return key
        return None

    def by_name(self, name: str) -> ApiKey | None:
        return next((k for k in self.by_digest.values() if k.name == name), None)


def parse(text: str) -> KeyRing:
    """Raises ValueError (pydantic's) naming the bad entry; duplicate names are refused."""
    parsed = _KeysFile.model_validate_json(text)
    ring: dict[str, ApiKey] = {}
    names: set[str] = set()
    for e in parsed.keys:
        if e.name in names:
            raise ValueError(f"key name {e.name!r} appears twice")
        names.add(e.name)
        d = e.sha256 if e.sha256 is not None else digest(e.key or "")
        ring[d] = ApiKey(name=e.name, tiers=frozenset(e.tiers),
                         rate_per_second=e.rate_per_second, burst=e.burst,
                         webhook_secret=e.webhook_secret)
    return KeyRing(by_digest=ring)


def load(path: str | Path) -> KeyRing:
    return parse(Path(path).read_text())


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
