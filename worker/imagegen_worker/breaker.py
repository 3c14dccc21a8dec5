"""A fail-fast breaker for calls to Redis, and the job records behind one. Built by `wiring`;
used by the job records (through `BreakerJobRecords`) and the heartbeats.

The pattern is the image cache's (`cache.ImageCache`): after a failure the dependency is not
asked again for `retry_after` seconds — calls fail at once with `Unavailable` — so that while
Redis is down or frozen every request does not pay a timeout (and the event loop does not queue
hundreds of them). After the pause one call (the probe) tries again while the others still fail
fast; its success closes the breaker, its failure starts another pause. Given a `probe` (a cheap
round trip such as PING), the probing happens out of band instead: every call fails fast while
the breaker is open and a background task probes every `retry_after`, so that no request (and no
loop awaiting one) ever waits on a frozen Redis after the first timeout. The failure is logged
once per outage and counted per call site in `imagegen_redis_errors`.

What the callers do with `Unavailable` is the documented degradation: generation goes on
without deduplication (attempts are counted locally, results are published anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .logs import fields
from .results import Existing, JobRecords, Peek

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_AFTER_S = 5.0


def unreachable(exc: Exception) -> bool:
    """Redis did not answer (down, frozen, unreachable): what opens the breaker. An error of one
    call (a key no encoder accepts, a script error) is that call's problem, not an outage."""
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError))


class Unavailable(RuntimeError):
    """The breaker is open: the dependency was failing a moment ago and is not asked now."""


class Breaker:
    def __init__(self, name: str, *, retry_after: float = RETRY_AFTER_S,
                 clock: Callable[[], float] = time.monotonic,
                 trips: Callable[[Exception], bool] = unreachable,
                 probe: Callable[[], Awaitable[object]] | None = None) -> None:
        self.name = name
        self.trips = trips
        self.probe = probe
        self._prober: asyncio.Task[None] | None = None
        self.retry_after = retry_after
        self.clock = clock
        self._down_until = 0.0
        self._open = False
        self._probing = False

    @property
    def open(self) -> bool:
        """A failure was seen and no call has succeeded since."""
        return self._open

    def available(self) -> bool:
        if self.probe is not None:
            return not self._open
        return not self._probing and self.clock() >= self._down_until

    async def call(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op` unless the breaker is open (paused, or another call probing); a failure
        that says the dependency is unreachable opens it."""
        if not self.available():
            raise Unavailable(f"{self.name} unavailable (breaker open)")
        probe = self._open
        self._probing = probe
        try:
            result = await op()
        except Exception as exc:
            if self.trips(exc):
                self.failed(exc)
            raise
        finally:
            if probe:
                self._probing = False
        self.recovered()
        return result

    def failed(self, exc: BaseException) -> None:
        if not self._open:
            log.warning("dependency unavailable, failing fast", extra=fields(
                dependency=self.name, error=repr(exc), retry_after_s=self.retry_after))
        self._open = True
        self._down_until = self.clock() + self.retry_after
        if self.probe is not None and (self._prober is None or self._prober.done()):
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        assert self.probe is not None
        while self._open:
            await asyncio.sleep(self.retry_after)
            try:
                await self.probe()
            except Exception as exc:
                log.debug("probe failed", extra=fields(dependency=self.name, error=repr(exc)))
                continue
            self.recovered()

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober

    def recovered(self) -> None:
        if self._open:
            log.info("dependency available again", extra=fields(dependency=self.name))
        self._open = False
        self._down_until = 0.0


class BreakerJobRecords(JobRecords):
    """The job records with every Redis round trip behind `breaker`."""

    def __init__(self, *args: Any, breaker: Breaker, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.breaker = breaker

    async def intake(self, *args: Any, **kw: Any) -> Existing:
        return await self.breaker.call(lambda: super(BreakerJobRecords, self).intake(*args, **kw))

    async def start(self, *args: Any, **kw: Any) -> list[int]:
        return await self.breaker.call(lambda: super(BreakerJobRecords, self).start(*args, **kw))

    async def finish(self, *args: Any, **kw: Any) -> Any:
        return await self.breaker.call(lambda: super(BreakerJobRecords, self).finish(*args, **kw))

    async def mark_published(self, *args: Any, **kw: Any) -> None:
        await self.breaker.call(
            lambda: super(BreakerJobRecords, self).mark_published(*args, **kw))

    async def peek(self, *args: Any, **kw: Any) -> Peek:
        return await self.breaker.call(lambda: super(BreakerJobRecords, self).peek(*args, **kw))
