"""Where answers go: the job record in Redis, the result message on the results topic, the
dead-letter topic. Used by `intake` and the batch runner through `app`.

Ordering that makes redelivery safe (the job record is the source of truth):
1. `JobRecords.finish` writes the terminal record atomically *unless one exists*, and returns
   the result that won — so every message ever published for a request id carries the same result.
2. `ResultPublisher.publish` produces it (acks=all, idempotent producer) and waits for the ack.
3. `JobRecords.mark_published` notes it; only then is the offset marked done and committed.
A redelivered message whose record is terminal, published, and came from the same Kafka offset is
skipped (no duplicate); a new message reusing a request id gets the stored result again.

Besides the JobRecord fields of the contract, the hash carries `source` (topic:partition:offset
of the message that produced the result) and `published` ("1"); JobRecord.from_hash ignores both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from imagegen_api import naming
from imagegen_api.messages import TERMINAL_STATES, DeadLetter, GenerationResult, JobRecord

_TERMINAL_LUA = "{" + ",".join(f"['{s}']=true" for s in sorted(TERMINAL_STATES)) + "}"

# KEYS[1]=job key; ARGV: request_id, worker, tier, now, ttl
_INTAKE = f"""
local terminal = {_TERMINAL_LUA}
local cur = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'result', 'source', 'published')
if cur[1] and terminal[cur[1]] then return cur end
redis.call('HSET', KEYS[1], 'request_id', ARGV[1], 'state', 'queued', 'worker', ARGV[2],
           'tier', ARGV[3], 'updated_at', ARGV[4])
if not cur[2] then redis.call('HSET', KEYS[1], 'attempts', '0') end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {{'queued', cur[2] or '0', false, false, false}}
"""

# KEYS[1]=job key; ARGV: request_id, state, result json, worker, tier, now, attempts, source, ttl
_FINISH = f"""
local terminal = {_TERMINAL_LUA}
local cur = redis.call('HMGET', KEYS[1], 'state', 'result')
if cur[1] and terminal[cur[1]] and cur[2] then return cur[2] end
redis.call('HSET', KEYS[1], 'request_id', ARGV[1], 'state', ARGV[2], 'result', ARGV[3],
           'worker', ARGV[4], 'tier', ARGV[5], 'updated_at', ARGV[6], 'attempts', ARGV[7],
           'source', ARGV[8])
redis.call('HDEL', KEYS[1], 'published')
redis.call('EXPIRE', KEYS[1], ARGV[9])
return false
"""


@dataclass(frozen=True)
class Existing:
    """What the job record says when a message arrives."""

    state: str
    attempts: int
    result: GenerationResult | None
    source: str | None
    published: bool

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES and self.result is not None


def source_of(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


def _text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class JobRecords:
    def __init__(self, client: aioredis.Redis, *, ttl_seconds: int, worker: str) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self.worker = worker
        self._intake = client.register_script(_INTAKE)
        self._finish = client.register_script(_FINISH)

    async def intake(self, request_id: str, tier: str) -> Existing:
        """Mark the request queued here, unless it is already terminal (then say how it ended)."""
        raw = await self._intake(
            keys=[naming.job_key(request_id)],
            args=[request_id, self.worker, tier, repr(time.time()), self.ttl],
        )
        state, attempts, result, source, published = (_text(v) for v in raw)
        return Existing(
            state=state or "queued",
            attempts=int(attempts or 0),
            result=GenerationResult.model_validate_json(result) if result else None,
            source=source,
            published=published == "1",
        )

    async def start(self, request_ids: list[str], tiers: list[str]) -> list[int]:
        """Mark requests running and count one attempt each; returns the attempt numbers."""
        now = repr(time.time())
        async with self.client.pipeline(transaction=True) as pipe:
            for rid, tier in zip(request_ids, tiers, strict=True):
                key = naming.job_key(rid)
                pipe.hset(key, mapping={"request_id": rid, "state": "running",
                                        "worker": self.worker, "tier": tier, "updated_at": now})
                pipe.hincrby(key, "attempts", 1)
                pipe.expire(key, self.ttl)
            replies = await pipe.execute()
        return [int(replies[i]) for i in range(1, len(replies), 3)]

    async def finish(self, result: GenerationResult, source: str) -> GenerationResult:
        """Write the terminal record unless one exists; the result that is now on record."""
        existing = await self._finish(
            keys=[naming.job_key(result.request_id)],
            args=[result.request_id, result.status, result.model_dump_json(exclude_none=True),
                  self.worker, result.tier or "", repr(time.time()), result.attempts, source,
                  self.ttl],
        )
        text = _text(existing)
        return GenerationResult.model_validate_json(text) if text else result

    async def mark_published(self, request_id: str) -> None:
        key = naming.job_key(request_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, "published", "1")
            pipe.expire(key, self.ttl)
            await pipe.execute()

    async def get(self, request_id: str) -> JobRecord | None:
        raw = await self.client.hgetall(naming.job_key(request_id))
        return JobRecord.from_hash(cast(dict[bytes, bytes], raw)) if raw else None


class ResultPublisher:
    """Produces results and dead letters; acks=all and idempotence, so an ack means durable."""

    def __init__(self, bootstrap: str, *, results_topic: str, dlq_topic: str,
                 client_id: str) -> None:
        self.results_topic = results_topic
        self.dlq_topic = dlq_topic
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=1,
            request_timeout_ms=30_000,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish(self, result: GenerationResult) -> None:
        await self.producer.send_and_wait(
            self.results_topic, value=result.to_bytes(), key=result.request_id.encode()
        )

    async def dead_letter(self, letter: DeadLetter) -> None:
        await self.producer.send_and_wait(
            self.dlq_topic, value=letter.to_bytes(), key=letter.request_id.encode(),
            headers=[("error_code", letter.error.code.encode())],
        )
