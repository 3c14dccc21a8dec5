"""Pure parts of webhook delivery: the signature, the retry schedule and the SSRF check.

Signature: `X-Imagegen-Timestamp: <unix seconds>` and `X-Imagegen-Signature: sha256=<hex>`, the
hex being HMAC-SHA256 over `<timestamp>.<body>` with the API key's `webhookSecret` (keys.py).
Signing the timestamp with the body lets a receiver refuse replays older than a tolerance.

SSRF: a target must be http(s) and every address its host resolves to must be public (not
private, loopback, link-local, multicast, reserved, unspecified, shared or site-local) unless
the pool's allow-list (spec.gateway.webhooks.allowedHosts: host names or CIDRs) names the host
or contains the address. Checked at submit time and again before each attempt (DNS rebinding).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Imagegen-Signature"
TIMESTAMP_HEADER = "X-Imagegen-Timestamp"
ID_HEADER = "X-Imagegen-Request-Id"
MAX_URL_CHARS = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookRefused(ValueError):
    """The target may not be called; the message says why (answered as a 400 naming webhook)."""


class Unresolved(WebhookRefused):
    """The host does not resolve (now): refused at submit, retried at delivery."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, f"{timestamp}." + body)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, signature: str, body: bytes, *, now: float,
           tolerance_seconds: float = 300) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def backoff_schedule(max_attempts: int, base_seconds: float, max_seconds: float) -> list[float]:
    """Delays before attempts 2..max_attempts: base, 2·base, 4·base, … each capped."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts {max_attempts} must be at least 1")
    return [min(max_seconds, base_seconds * 2 ** i) for i in range(max_attempts - 1)]


def classify(ip: IPAddress) -> str | None:
    """Why `ip` is no public target (e.g. "loopback"), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return classify(ip.ipv4_mapped)
    checks = (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
              ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
              ("private", ip.is_private), ("reserved", ip.is_reserved))
    for reason, hit in checks:
        if hit:
            return reason
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "shared (carrier-grade NAT)"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if not ip.is_global:
        return "not global"
    return None


@dataclass(frozen=True)
class AllowList:
    """spec.gateway.webhooks.allowedHosts: exact host names (case-insensitive) and CIDRs."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts: set[str] = set()
        nets: list[IPNetwork] = []
        for e in entries:
            try:
                nets.append(ipaddress.ip_network(e.strip(), strict=False))
            except ValueError:
                hosts.add(e.strip().lower().rstrip("."))
        return cls(frozenset(hosts), tuple(nets))

    def permits(self, host: str, ip: IPAddress) -> bool:
        return host.lower().rstrip(".") in self.hosts or any(ip in n for n in self.networks)


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int


def parse_target(url: str) -> Target:
    """A webhook URL → scheme, host, port; WebhookRefused for anything but http(s)://host."""
    if len(url) > MAX_URL_CHARS:
        raise WebhookRefused(f"webhook URL is {len(url)} characters, the limit is "
                             f"{MAX_URL_CHARS}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"webhook URL is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookRefused(f"webhook scheme {parts.scheme or 'none'!r} is not allowed "
                             "(http or https only)")
    if not parts.hostname:
        raise WebhookRefused("webhook URL has no host")
    if parts.username or parts.password:
        raise WebhookRefused("webhook URL must not carry credentials")
    return Target(url=url, scheme=parts.scheme, host=parts.hostname,
                  port=port or (443 if parts.scheme == "https" else 80))


def check_addresses(target: Target, addresses: Sequence[str], allow: AllowList) -> None:
    """Every address the host resolved to must be public or allowed; else WebhookRefused."""
    if not addresses:
        raise Unresolved(f"webhook host {target.host!r} does not resolve")
    for raw in addresses:
        ip = ipaddress.ip_address(raw.split("%", 1)[0])
        reason = classify(ip)
        if reason is not None and not allow.permits(target.host, ip):
            raise WebhookRefused(
                f"webhook host {target.host!r} resolves to {ip}, a {reason} address; "
                "not allowed unless spec.gateway.webhooks.allowedHosts permits it")
