"""Where answers go: the job record in Redis, the result message on the results topic, the
dead-letter topic. Used by `intake` and the batch runner through `app`.

Ordering that makes redelivery safe (the job record is the source of truth):
1. `JobRecords.finish` writes the terminal record atomically *unless one exists*, and returns
   the result that won — so every message ever published for a request id carries the same result.
2. `ResultPublisher.publish` produces it (acks=all, idempotent producer) and waits for the ack.
3. `JobRecords.mark_published` notes it; only then is the offset marked done and committed.
A redelivered message whose record is terminal, published, and came from the same Kafka offset is
skipped (no duplicate); a new message reusing a request id gets the stored result again.

Isolation: records are keyed per pool (naming.job_key(ns, pool, id)); ids are the clients' own,
so a second tenant sending the same id never meets the first one's record.

Concurrent copies of one id (issue 17): `start` leases the id to the message that runs it (the
record's `lease` = its topic:partition:offset, `lease_until` = Redis time + lease_seconds). A
copy from another message that finds the lease held (or the id answered since the copy was
queued) counts no attempt and is not generated: its caller parks it (`leases.park`) until the
record is terminal (answered from it) or the lease lapses (the holder died: the copy runs).
The same message redelivered after a crash has the same offset, so it takes its own lease back
at once. Rejections never win over a real answer: a
rejection takes the id only while no other message holds it (no record), and a later real answer
overwrites a recorded rejection; otherwise it is answered and recorded under the message's own
id `invalid:<topic:partition:offset>`.

Store: job records are the idempotency memory, so they live in the job store
(workerconfig.JobStoreSettings: another Redis database than the image cache by default, or their
own instance), never among cache entries that may be evicted or flushed. Their TTL
(`jobTtlSeconds`) must cover the tier topics' retention: a message still in Kafka must find its
record (docs/operations.md, "Job records").

Besides the JobRecord fields of the contract, the hash carries `source` (topic:partition:offset
of the message that produced the result), `published` ("1"), `lease` and `lease_until`;
JobRecord.from_hash ignores them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from imagegen_api import naming
from imagegen_api.messages import TERMINAL_STATES, DeadLetter, GenerationResult, JobRecord

_TERMINAL_LUA = "{" + ",".join(f"['{s}']=true" for s in sorted(TERMINAL_STATES)) + "}"
_NOW_MS = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)"
# A lease is live when set, not ours (ARGV source) and not lapsed.
_HELD = "(cur_lease and cur_lease ~= src and tonumber(cur_until or '0') > now)"

# KEYS[1]=job key; ARGV: request_id, worker, tier, ttl, queue ("1": mark queued; "0": read only)
# Returns {state, attempts, result, source, published}. For a caller about to queue a request a
# recorded rejection is not an answer (returned as not terminal, and replaced by `queued`).
_INTAKE = f"""
local terminal = {_TERMINAL_LUA}
{_NOW_MS}
local cur = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'result', 'source', 'published',
                       'lease', 'lease_until')
local queue = ARGV[5] == '1'
if cur[1] and terminal[cur[1]] and (cur[1] ~= 'rejected' or not queue) then
  return {{cur[1], cur[2], cur[3], cur[4], cur[5]}}
end
if not queue then return {{cur[1] or false, cur[2] or '0', false, false, false}} end
local running = cur[1] == 'running' and cur[6] and tonumber(cur[7] or '0') > now
if cur[1] == 'rejected' then  -- a rejection used no attempt and is no answer for this one
  redis.call('HDEL', KEYS[1], 'result', 'source', 'published')
  redis.call('HSET', KEYS[1], 'attempts', '0')
  cur[2] = '0'
end
if not running then
  redis.call('HSET', KEYS[1], 'request_id', ARGV[1], 'state', 'queued', 'worker', ARGV[2],
             'tier', ARGV[3], 'updated_at', tostring(now / 1000))
end
if not cur[2] then redis.call('HSET', KEYS[1], 'attempts', '0') end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {{running and 'running' or 'queued', cur[2] or '0', false, false, false}}
"""

# KEYS = job keys; ARGV: worker, ttl, lease_ms, then per key: request_id, tier, source.
# Per key: the attempt number now started, or -1 when another message holds the lease or the id
# was answered since its copy was queued (a copy queued while the first one was still queued too:
# the parked copy is then answered from the record, never generated a second time).
_START = f"""
local terminal = {_TERMINAL_LUA}
{_NOW_MS}
local out = {{}}
for i, key in ipairs(KEYS) do
  local rid, tier, src = ARGV[4 + 3 * (i - 1)], ARGV[5 + 3 * (i - 1)], ARGV[6 + 3 * (i - 1)]
  local cur = redis.call('HMGET', key, 'lease', 'lease_until', 'state', 'result')
  local cur_lease, cur_until = cur[1], cur[2]
  local answered = cur[3] and terminal[cur[3]] and cur[3] ~= 'rejected' and cur[4]
  if answered or {_HELD} then
    out[i] = -1
  else
    redis.call('HSET', key, 'request_id', rid, 'state', 'running', 'worker', ARGV[1],
               'tier', tier, 'updated_at', tostring(now / 1000), 'lease', src,
               'lease_until', tostring(now + tonumber(ARGV[3])))
    out[i] = redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('EXPIRE', key, ARGV[2])
  end
end
return out
"""

# KEYS[1]=job key of the id, KEYS[2]=job key of the message's own id (invalid:<source>);
# ARGV: request_id, state, result json, worker, tier, attempts, source, ttl, own id.
# Returns false (recorded as given), the winning result json, or {'own'} (a rejection that was
# recorded under the message's own id because another message holds the request id).
_FINISH = f"""
local terminal = {_TERMINAL_LUA}
{_NOW_MS}
local src = ARGV[7]
local cur = redis.call('HMGET', KEYS[1], 'state', 'result', 'source', 'lease', 'lease_until')
local cur_lease, cur_until = cur[4], cur[5]
local rejection = ARGV[2] == 'rejected'
local key = KEYS[1]
if cur[1] and terminal[cur[1]] and cur[2] then
  -- First wins; but a rejection never wins over a real answer (of another message).
  if not (cur[1] == 'rejected' and not rejection and cur[3] ~= src) then
    if cur_lease == src then redis.call('HDEL', KEYS[1], 'lease', 'lease_until') end
    return cur[2]
  end
elseif rejection and cur[1] then
  -- The id is another message's (queued, running or leased): answer under our own id.
  key = KEYS[2]
end
local rid = ARGV[1]
if key == KEYS[2] then rid = ARGV[9] end
redis.call('HSET', key, 'request_id', rid, 'state', ARGV[2], 'result', ARGV[3],
           'worker', ARGV[4], 'tier', ARGV[5], 'updated_at', tostring(now / 1000),
           'attempts', ARGV[6], 'source', src)
redis.call('HDEL', key, 'published', 'lease', 'lease_until')
redis.call('EXPIRE', key, ARGV[8])
if key == KEYS[2] then return {{'own'}} end
return false
"""

# KEYS[1]=job key; ARGV: source. {state, result, lease holder live ("1"/"0")}
_PEEK = f"""
{_NOW_MS}
local cur = redis.call('HMGET', KEYS[1], 'state', 'result', 'lease', 'lease_until')
local src = ARGV[1]
local cur_lease, cur_until = cur[3], cur[4]
return {{cur[1] or false, cur[2] or false, {_HELD} and '1' or '0'}}
"""

LEASE_HELD = -1  # what `start` returns for a copy whose id another message is running


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


@dataclass(frozen=True)
class Peek:
    """The record as a parked copy sees it: answered yet, or still leased to another message."""

    result: GenerationResult | None  # the terminal result, when there is one
    held: bool  # another message holds a live lease


def source_of(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


def own_id(source: str) -> str:
    """The id a message is answered under when its own request id is not usable or not its own
    (the same form `intake` gives messages that carry no usable id)."""
    return f"invalid:{source}"


def _text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class JobRecords:
    """The job records of one pool. `client` is the job store (JobStoreSettings), not the
    cache's Redis. `lease_seconds` should cover one batch and its upload: longer than that,
    a live holder is presumed dead and a parked copy runs."""

    def __init__(self, client: aioredis.Redis, *, namespace: str, pool: str, ttl_seconds: int,
                 worker: str, lease_seconds: float = 600.0) -> None:
        self.client = client
        self.namespace = namespace
        self.pool = pool
        self.ttl = ttl_seconds
        self.worker = worker
        self.lease_ms = int(lease_seconds * 1000)
        self._intake = client.register_script(_INTAKE)
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._peek = client.register_script(_PEEK)

    def key(self, request_id: str) -> str:
        return naming.job_key(self.namespace, self.pool, request_id)

    async def intake(self, request_id: str, tier: str, *, queue: bool = True) -> Existing:
        """Mark the request queued here, unless it is already terminal (then say how it ended).
        `queue=False` (a message being rejected) only reads: a rejection must not create the
        record that would make it look like the id's owner."""
        raw = await self._intake(
            keys=[self.key(request_id)],
            args=[request_id, self.worker, tier, self.ttl, "1" if queue else "0"],
        )
        state, attempts, result, source, published = (_text(v) for v in raw)
        return Existing(
            state=state or "queued",
            attempts=int(attempts or 0),
            result=GenerationResult.model_validate_json(result) if result else None,
            source=source,
            published=published == "1",
        )

    async def start(self, request_ids: Sequence[str], tiers: Sequence[str],
                    sources: Sequence[str]) -> list[int]:
        """Lease each id to its message, mark it running and count one attempt; the attempt
        numbers, or LEASE_HELD where another message holds the id (nothing counted)."""
        if not request_ids:
            return []
        args: list[str | int] = [self.worker, self.ttl, self.lease_ms]
        for rid, tier, src in zip(request_ids, tiers, sources, strict=True):
            args += [rid, tier, src]
        raw = await self._start(keys=[self.key(r) for r in request_ids], args=args)
        return [int(v) for v in raw]

    async def finish(self, result: GenerationResult, source: str) -> GenerationResult:
        """Write the terminal record unless one exists; the result that is now on record (a
        rejection of a message whose id belongs to another message: under `own_id(source)`)."""
        mine = own_id(source)
        existing = await self._finish(
            keys=[self.key(result.request_id), self.key(mine)],
            args=[result.request_id, result.status, result.model_dump_json(exclude_none=True),
                  self.worker, result.tier or "", result.attempts, source, self.ttl, mine],
        )
        if isinstance(existing, list):
            return result.model_copy(update={"request_id": mine})
        text = _text(existing)
        return GenerationResult.model_validate_json(text) if text else result

    async def peek(self, request_id: str, source: str) -> Peek:
        """Is the id answered, or still leased to a message other than `source`?"""
        state, result, held = (_text(v) for v in await self._peek(
            keys=[self.key(request_id)], args=[source]))
        done = state in TERMINAL_STATES and state != "rejected" and result
        return Peek(GenerationResult.model_validate_json(result) if done and result else None,
                    held == "1")

    async def mark_published(self, request_id: str) -> None:
        key = self.key(request_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, "published", "1")
            pipe.expire(key, self.ttl)
            await pipe.execute()

    async def get(self, request_id: str) -> JobRecord | None:
        raw = await self.client.hgetall(self.key(request_id))
        return JobRecord.from_hash(cast(dict[bytes, bytes], raw)) if raw else None


def record_ttl(job_ttl_seconds: int, retention_seconds: int | None) -> int:
    """A record must outlive every message that can still be (re)delivered for its id: at least
    the tier topics' retention, whatever jobTtlSeconds says (None: retention unknown/unlimited)."""
    return max(job_ttl_seconds, retention_seconds or 0)


async def topic_retention_seconds(bootstrap: str, topics: Sequence[str], *,
                                  timeout_s: float = 10.0) -> int | None:
    """The longest effective `retention.ms` of `topics` (their own or the broker's default), in
    seconds; None when it cannot be read or a topic keeps messages forever (-1)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap,
                                request_timeout_ms=int(timeout_s * 1000))
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t, None) for t in topics])
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    longest = 0
    for resp in responses:
        for code, _msg, _type, _name, entries in resp.resources:
            if code:
                return None
            for name, value, *_ in entries:
                if name == "retention.ms":
                    if value is None or int(value) < 0:
                        return None
                    longest = max(longest, int(value))
    return -(-longest // 1000) if longest else None


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
