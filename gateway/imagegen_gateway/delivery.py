"""Webhook delivery: who calls the receiver, once per request id, with retries.

Why the gateway and not the worker: the per-key secret lives in the gateway's keys Secret (the
workers never see API keys), and retries with backoff must not hold a GPU worker's loop.

Why once with several replicas: at submit the gateway records the webhook in Redis
(naming.webhook_key: url, key name, state `pending`). Every replica also runs one consumer of
the results topic in the consumer group naming.webhook_group: Kafka gives each partition, so
each result, to one replica. Workers may publish a result twice (at-least-once) and a rebalance
may hand a result to a second replica: the atomic claim below lets only one delivery run (a
lease on the record; a replica that reads a result whose lease another holds waits for the
lease to lapse and takes over if the delivery did not end). Offsets are committed only below the
first result whose delivery still runs, so a replica killed in the middle of a delivery leaves
that result to the partition's next owner, which finishes it once the lease lapses (the attempts
made so far stay in the record and count against maxAttempts). Each attempt is
appended to the record's `attempts`; GET /v1/generations/{id} shows them as `webhook`. A
group that never committed starts at the log start (a result produced while the first replica
was joining is not missed; older results find no pending record and cost one Redis call each).

Each attempt re-resolves the host through a resolver that refuses non-public addresses (unless
allowed): the address checked is the address connected to, so DNS rebinding cannot slip in.
Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import redis.asyncio as aioredis
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from imagegen_api import naming
from imagegen_api.messages import GenerationResult
from imagegen_api.workerconfig import WorkerConfig
from pydantic import ValidationError

from . import webhooks
from .keys import KeyRing

log = logging.getLogger(__name__)

# KEYS[1] webhook hash; ARGV now, lease seconds, owner. {0}: nothing to deliver (no webhook, or
# it ended); {1}: claimed for this delivery; {2, lease_until}: another delivery holds the lease.
_CLAIM = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st or st == 'delivered' or st == 'failed' then return {0, ''} end
local now = tonumber(ARGV[1])
local lease = redis.call('HGET', KEYS[1], 'lease_until') or '0'
if st == 'delivering' and tonumber(lease) > now then return {2, lease} end
redis.call('HSET', KEYS[1], 'state', 'delivering',
           'lease_until', tostring(now + tonumber(ARGV[2])), 'owner', ARGV[3])
return {1, ''}
"""


@dataclass(frozen=True)
class Policy:
    allow: webhooks.AllowList
    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float
    timeout_seconds: float
    ttl_seconds: int

    @property
    def schedule(self) -> list[float]:
        return webhooks.backoff_schedule(self.max_attempts, self.backoff_seconds,
                                         self.backoff_max_seconds)

    @property
    def lease_seconds(self) -> float:
        """Long enough for every attempt to time out and every pause to pass, plus margin."""
        return sum(self.schedule) + self.max_attempts * self.timeout_seconds + 30


async def resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(i[4][0]) for i in infos})


async def check_submit(url: str, allow: webhooks.AllowList) -> webhooks.Target:
    """At submit: parse, resolve, check every address; WebhookRefused says why."""
    target = webhooks.parse_target(url)
    try:
        addresses = await resolve(target.host, target.port)
    except OSError as exc:
        raise webhooks.Unresolved(f"webhook host {target.host!r} does not resolve: "
                                  f"{exc}") from None
    webhooks.check_addresses(target, addresses, allow)
    return target


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver, refusing what webhooks.check_addresses refuses."""

    def __init__(self, allow: webhooks.AllowList) -> None:
        self._allow = allow
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        target = webhooks.Target(url="", scheme="http", host=host, port=port)
        webhooks.check_addresses(target, [r["host"] for r in results], self._allow)
        return results

    async def close(self) -> None:
        await self._inner.close()


def payload(result: GenerationResult) -> bytes:
    """The body POSTed to the receiver: the terminal job as GET /v1/generations/{id} has it."""
    body: dict[str, Any] = {
        "id": result.request_id, "object": "generation", "state": result.status,
        "tier": result.tier, "model": result.model, "cache_hit": result.cache_hit,
        "finished_at": result.finished_at, "timings": result.timings.model_dump(),
        "images": [img.model_dump(exclude_none=True) for img in result.images]}
    if result.error is not None:
        body["error"] = json.loads(result.error.model_dump_json(exclude_none=True))
    return json.dumps(body, separators=(",", ":")).encode()


async def register(redis: aioredis.Redis, pool: WorkerConfig, request_id: str, url: str,
                   key_name: str, ttl_seconds: int) -> None:
    key = naming.webhook_key(pool.namespace, pool.pool, request_id)
    await redis.hset(key, mapping={"url": url, "key": key_name, "state": "pending",
                                   "attempts": "[]"})
    await redis.expire(key, ttl_seconds)


async def view(redis: aioredis.Redis, pool: WorkerConfig, request_id: str
               ) -> dict[str, Any] | None:
    """The `webhook` part of GET /v1/generations/{id}, or None without a webhook."""
    raw = cast(dict[bytes, bytes], await redis.hgetall(
        naming.webhook_key(pool.namespace, pool.pool, request_id)))
    if not raw:
        return None
    d = {k.decode(): v.decode() for k, v in raw.items()}
    attempts = json.loads(d.get("attempts", "[]"))
    return {"url": d.get("url"), "state": d.get("state"), "attempts": attempts}


class Deliverer:
    def __init__(self, bootstrap: str, pool: WorkerConfig, redis: aioredis.Redis,
                 keys: KeyRing, policy: Policy, *, client_id: str) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys
        self._policy = policy
        self._owner = client_id
        self._claim = redis.register_script(_CLAIM)
        self._consumer = AIOKafkaConsumer(
            pool.kafka.results_topic, bootstrap_servers=bootstrap, client_id=client_id,
            group_id=naming.webhook_group(pool.namespace, pool.pool),
            auto_offset_reset="earliest", enable_auto_commit=False)
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        # Offsets are committed only below the first result whose delivery still runs: a
        # replica killed mid-delivery leaves it to be read again by the partition's next owner.
        self._next: dict[TopicPartition, int] = {}
        self._pending: dict[TopicPartition, set[int]] = {}
        self._committed: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=CheckedResolver(self._policy.allow))
        self._http = aiohttp.ClientSession(
            connector=connector, trust_env=False,
            timeout=aiohttp.ClientTimeout(total=self._policy.timeout_seconds))
        await self._consumer.start()
        self._task = asyncio.create_task(self._read(), name="webhooks")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._deliveries) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self._consumer.stop()
        if self._http is not None:
            await self._http.close()

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for tp, msgs in batches.items():
                for msg in msgs:
                    self._next[tp] = msg.offset + 1
                    if msg.value is None:
                        continue
                    try:
                        result = GenerationResult.from_bytes(msg.value)
                    except ValidationError:
                        continue
                    try:
                        task = await self.offer(result)
                    except aioredis.RedisError as exc:
                        log.warning("webhook of %s not claimed: %s", result.request_id, exc)
                        continue
                    if task is not None:
                        self._track(tp, msg.offset, task)
            await self._commit()

    def _track(self, tp: TopicPartition, offset: int, task: asyncio.Task[None]) -> None:
        self._pending.setdefault(tp, set()).add(offset)
        task.add_done_callback(lambda _: self._pending.get(tp, set()).discard(offset))

    async def _commit(self) -> None:
        owned = self._consumer.assignment()
        offsets: dict[TopicPartition, int] = {}
        for tp, nxt in list(self._next.items()):
            if tp not in owned:  # revoked: its next owner reads on from the last commit
                self._next.pop(tp, None)
                self._committed.pop(tp, None)
                continue
            pending = self._pending.get(tp)
            at = min(pending) if pending else nxt
            if self._committed.get(tp) != at:
                offsets[tp] = at
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
        except KafkaError as exc:  # a rebalance under way: the next round commits again
            log.info("webhook offsets not committed: %s", exc)

    async def offer(self, result: GenerationResult) -> asyncio.Task[None] | None:
        """Start the delivery of `result` if it has a webhook and nobody else delivers it; a
        delivery whose lease another replica holds is waited out (it may have died)."""
        key = naming.webhook_key(self._pool.namespace, self._pool.pool, result.request_id)
        code, lease = await self._try_claim(key)
        if code == 0:
            return None
        coro = self.deliver(key, result) if code == 1 else self._after_lease(key, result, lease)
        task = asyncio.create_task(coro, name=f"webhook-{key}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
        return task

    async def _try_claim(self, key: str) -> tuple[int, float]:
        code, lease = await self._claim(keys=[key], args=[time.time(),
                                                          self._policy.lease_seconds,
                                                          self._owner])
        return int(code), float(lease or 0)

    async def _after_lease(self, key: str, result: GenerationResult, until: float) -> None:
        """Another replica holds the delivery: when its lease lapses, take over if unfinished."""
        while True:
            await asyncio.sleep(max(0.0, until - time.time()) + 1)
            code, until = await self._try_claim(key)
            if code == 0:
                return
            if code == 1:
                await self.deliver(key, result)
                return

    async def deliver(self, key: str, result: GenerationResult) -> None:
        assert self._http is not None
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(key))
        d = {k.decode(): v.decode() for k, v in raw.items()}
        url, api_key = d.get("url", ""), self._keys.by_name(d.get("key", ""))
        # A take-over continues the attempts of the replica that died: the budget is per id.
        attempts: list[dict[str, Any]] = json.loads(d.get("attempts", "[]"))
        secret = api_key.webhook_secret if api_key is not None else None
        body = payload(result)
        schedule = self._policy.schedule
        state = "failed"
        if attempts and len(attempts) <= len(schedule):  # wait as the dead replica would have
            await asyncio.sleep(schedule[len(attempts) - 1])
        for n in range(len(attempts) + 1, self._policy.max_attempts + 1):
            if secret is None:  # the key lost its secret (or the key itself) since submit
                attempts.append({"n": n, "at": time.time(), "outcome": "refused",
                                 "error": "the key has no webhookSecret"})
                break
            outcome = await self._attempt(url, secret, body, result.request_id, n)
            attempts.append(outcome)
            await self._redis.hset(key, "attempts", json.dumps(attempts))
            if outcome["outcome"] == "delivered":
                state = "delivered"
                break
            if outcome["outcome"] == "refused" or n > len(schedule):
                break
            await asyncio.sleep(schedule[n - 1])
        await self._redis.hset(key, mapping={"state": state, "attempts": json.dumps(attempts)})
        log.info("webhook of %s %s after %d attempt(s)", result.request_id, state,
                 len(attempts))

    async def _attempt(self, url: str, secret: str, body: bytes, request_id: str,
                       n: int) -> dict[str, Any]:
        assert self._http is not None
        ts = int(time.time())
        headers = {"Content-Type": "application/json",
                   webhooks.TIMESTAMP_HEADER: str(ts),
                   webhooks.SIGNATURE_HEADER: webhooks.sign(secret, ts, body),
                   webhooks.ID_HEADER: request_id}
        started = time.monotonic()
        rec: dict[str, Any] = {"n": n, "at": time.time()}
        try:
            # aiohttp skips its resolver for an IP literal: check again here (the allow-list
            # may have changed since submit); for a name the resolver checks what it connects to.
            await check_submit(url, self._policy.allow)
            async with self._http.post(url, data=body, headers=headers,
                                       allow_redirects=False) as resp:
                rec["status"] = resp.status
                rec["outcome"] = "delivered" if 200 <= resp.status < 300 else "http_error"
        except webhooks.WebhookRefused as exc:  # Unresolved: DNS may come back, retried
            rec.update(outcome="error" if isinstance(exc, webhooks.Unresolved) else "refused",
                       error=str(exc))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            refused = exc.__cause__ if isinstance(exc.__cause__, webhooks.WebhookRefused) \
                else None
            rec.update(outcome="refused" if refused is not None
                       and not isinstance(refused, webhooks.Unresolved) else "error",
                       error=str(refused or exc) or type(exc).__name__)
        rec["ms"] = round((time.monotonic() - started) * 1000, 1)
        return rec
