"""Per-key token buckets in Redis, one Lua script (atomic, shared by every gateway replica of the
pool): a bucket of `burst` tokens refilled at `rate` per second; each request takes one. Called
by `app` after authentication, before anything is produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis

# KEYS[1] bucket hash; ARGV rate, burst, now (s, from Redis TIME when 0).
# Returns {allowed (0|1), milliseconds until one token is there}.
TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(h[1])
local ts = tonumber(h[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait_ms}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_seconds: int  # whole seconds (Retry-After), at least 1 when refused


class RateLimiter:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._script = redis.register_script(TOKEN_BUCKET)

    async def take(self, key: str, *, rate: float, burst: int) -> Decision:
        allowed, wait_ms = await self._script(keys=[key], args=[rate, burst])
        if int(allowed):
            return Decision(True, 0)
        return Decision(False, max(1, math.ceil(int(wait_ms) / 1000)))
