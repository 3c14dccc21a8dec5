"""Pure parts of webhooks and load shedding: signature, SSRF classifier and allow-list, backoff
schedule, shedding decision, webhook secrets in the keys file."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re

import pytest
from imagegen_gateway import delivery, keys, shedding, webhooks
from imagegen_gateway.requests import parse_body

SECRET = "whsec-0123456789abcdef"


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"id":"gw-1","state":"succeeded"}'
    want = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhooks.sign(SECRET, 1700000000, body) == f"sha256={want}"


def test_verify_accepts_fresh_and_refuses_tampered_stale_or_wrong_secret() -> None:
    body = b'{"id":"gw-1"}'
    sig = webhooks.sign(SECRET, 1000, body)
    assert webhooks.verify(SECRET, "1000", sig, body, now=1100)
    assert not webhooks.verify(SECRET, "1000", sig, body + b" ", now=1100)
    assert not webhooks.verify(SECRET, "1001", sig, body, now=1100)  # timestamp is signed
    assert not webhooks.verify("whsec-another-secret-00", "1000", sig, body, now=1100)
    assert not webhooks.verify(SECRET, "1000", sig, body, now=1000 + 301)
    assert not webhooks.verify(SECRET, "abc", sig, body, now=1000)


@pytest.mark.parametrize(("ip", "reason"), [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.9", "private"),
    ("192.168.1.1", "private"), ("169.254.169.254", "link-local"), ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"), ("240.0.0.1", "private"), ("100.64.1.1", "shared"),
    ("::1", "loopback"), ("fe80::1", "link-local"), ("fc00::1", "private"),
    ("ff02::1", "multicast"), ("::", "unspecified"), ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link-local"), ("fec0::1", "site-local"),
    ("8.8.8.8", None), ("93.184.216.34", None), ("2606:4700:4700::1111", None),
])
def test_classifier(ip: str, reason: str | None) -> None:
    got = webhooks.classify(ipaddress.ip_address(ip))
    if reason is None:
        assert got is None
    else:
        assert got is not None and got.startswith(reason), got


def test_parse_target_only_http_and_https() -> None:
    t = webhooks.parse_target("https://hooks.example.com/x?y=1")
    assert (t.scheme, t.host, t.port) == ("https", "hooks.example.com", 443)
    assert webhooks.parse_target("http://[2606:4700::1]:8080/").port == 8080
    for bad, words in [("ftp://example.com/", "scheme 'ftp'"), ("file:///etc/passwd", "scheme"),
                       ("gopher://x/", "scheme"), ("http:///nohost", "no host"),
                       ("http://u:p@example.com/", "credentials"),
                       ("http://example.com:99999/", "malformed"),
                       ("https://e.com/" + "a" * 3000, "limit is 2048")]:
        with pytest.raises(webhooks.WebhookRefused, match=re.escape(words)):
            webhooks.parse_target(bad)


def test_addresses_refused_unless_allow_listed_by_host_or_cidr() -> None:
    target = webhooks.parse_target("http://receiver.local:9000/hook")
    none = webhooks.AllowList()
    webhooks.check_addresses(target, ["93.184.216.34"], none)
    with pytest.raises(webhooks.WebhookRefused, match=re.escape("127.0.0.1, a loopback address")):
        webhooks.check_addresses(target, ["127.0.0.1"], none)
    # One bad address among good ones is enough to refuse (the client may pick any).
    with pytest.raises(webhooks.WebhookRefused, match=re.escape("10.0.0.5, a private")):
        webhooks.check_addresses(target, ["93.184.216.34", "10.0.0.5"], none)
    with pytest.raises(webhooks.WebhookRefused, match="does not resolve"):
        webhooks.check_addresses(target, [], none)
    by_cidr = webhooks.AllowList.parse(["127.0.0.0/8", "fd00::/8"])
    webhooks.check_addresses(target, ["127.0.0.1", "fd00::5"], by_cidr)
    with pytest.raises(webhooks.WebhookRefused, match=re.escape("169.254.169.254")):
        webhooks.check_addresses(target, ["169.254.169.254"], by_cidr)
    by_host = webhooks.AllowList.parse(["Receiver.Local."])
    webhooks.check_addresses(target, ["10.0.0.5", "fe80::1%eth0"], by_host)


def test_backoff_schedule_doubles_and_caps() -> None:
    assert webhooks.backoff_schedule(1, 2, 300) == []
    assert webhooks.backoff_schedule(5, 2, 300) == [2, 4, 8, 16]
    assert webhooks.backoff_schedule(6, 1, 5) == [1, 2, 4, 5, 5]
    with pytest.raises(ValueError, match="at least 1"):
        webhooks.backoff_schedule(0, 1, 5)


def test_shedding_decision() -> None:
    assert shedding.decide(None, 300) == shedding.Shed(False, None, 0)
    assert shedding.decide(shedding.Load(10_000, 0.0), 300).refuse is False  # no estimate
    ok = shedding.decide(shedding.Load(600, 2.0), 300)
    assert (ok.refuse, ok.wait_seconds) == (False, 300.0)
    over = shedding.decide(shedding.Load(1000, 2.0), 300)
    assert over == shedding.Shed(True, 500.0, 200)
    assert shedding.decide(shedding.Load(601, 2.0), 300).retry_after_seconds == 1


def test_keys_file_webhook_secret() -> None:
    ring = keys.parse('{"keys": [{"name": "a", "key": "sk-0123456789abcdef", '
                      f'"webhookSecret": "{SECRET}"}}, '
                      '{"name": "b", "key": "sk-fedcba9876543210"}]}')
    a = ring.lookup("sk-0123456789abcdef")
    assert a is not None and a.webhook_secret == SECRET
    assert ring.by_name("a") == a
    b = ring.by_name("b")
    assert b is not None and b.webhook_secret is None
    assert ring.by_name("nobody") is None
    with pytest.raises(ValueError, match=r"webhook_secret|webhookSecret"):
        keys.parse('{"keys": [{"name": "a", "key": "sk-0123456789abcdef", '
                   '"webhookSecret": "short"}]}')


def test_body_webhook_field() -> None:
    assert parse_body(b'{"prompt": "p", "webhook": "https://h/x"}').webhook == "https://h/x"


def test_unresolvable_host_is_its_own_refusal() -> None:
    # Refused at submit like the others, but a delivery attempt retries it (DNS may come back).
    target = webhooks.parse_target("http://receiver.example/hook")
    with pytest.raises(webhooks.Unresolved):
        webhooks.check_addresses(target, [], webhooks.AllowList())
    assert issubclass(webhooks.Unresolved, webhooks.WebhookRefused)


async def test_delivery_resolver_refuses_what_it_would_connect_to() -> None:
    # The resolver aiohttp connects through: localhost (loopback) refused unless allowed.
    refusing = delivery.CheckedResolver(webhooks.AllowList())
    with pytest.raises(webhooks.WebhookRefused, match="loopback"):
        await refusing.resolve("localhost", 80)
    await refusing.close()
    allowing = delivery.CheckedResolver(webhooks.AllowList.parse(["127.0.0.0/8", "::1/128"]))
    got = await allowing.resolve("localhost", 80)
    assert got and all(r["host"] in ("127.0.0.1", "::1") for r in got)
    await allowing.close()
