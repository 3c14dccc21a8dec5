"""Outages of the dependencies an answer needs (object storage, Kafka): retry with backoff,
not-ready while down, and the stop that ends the waiting. Built by `wiring`; used by `batchrun`
(uploads, answers) and `intake` (answers), read by `dispatch` (fetching pauses while anything is
down) and by the readiness probe (`Health.reasons`).

An outage is not the request's fault, so it never counts an attempt and never re-generates:
the operation in hand (one upload, one publish) is retried with exponential backoff
(`BASE_S` doubling up to `CAP_S`) until it works. Meanwhile the worker is NotReady and fetches
nothing, the model stays loaded, and work in hand waits. A stop (SIGTERM, drain) during an outage
ends the waiting with `Abandoned`: the message stays unacknowledged in Kafka for the next owner,
and the process exits within its grace period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from .aio import wait_event
from .logs import fields
from .server import Health

log = logging.getLogger(__name__)

T = TypeVar("T")

BASE_S = 0.2
CAP_S = 5.0

STORAGE = "storage"
KAFKA = "kafka"


def kafka_transient(exc: Exception) -> bool:
    """A broker or network problem that may go away (retry), not a problem of the message."""
    if isinstance(exc, (KafkaTimeoutError, KafkaConnectionError, TimeoutError, OSError)):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


class Abandoned(RuntimeError):
    """The worker is stopping while a dependency is down: the message goes back to Kafka."""


class Outages:
    def __init__(self, health: Health, *, base_s: float = BASE_S, cap_s: float = CAP_S) -> None:
        self.health = health
        self.base_s = base_s
        self.cap_s = cap_s
        self.stop = asyncio.Event()  # set by `dispatch` when the worker stops
        self.recovered = asyncio.Event()  # set whenever nothing is down
        self.recovered.set()
        self._down: dict[str, float] = {}  # dependency → since (monotonic)
        self.retries = 0  # operations tried again, for tests and logs

    @property
    def down(self) -> frozenset[str]:
        return frozenset(self._down)

    async def retry(self, dependency: str, op: Callable[[], Awaitable[T]], *,
                    transient: Callable[[Exception], bool] = lambda _exc: True) -> T:
        """`op()` until it works; an exception `transient` says no to is not an outage: it is
        raised at once (a message too large, a result that cannot be serialised)."""
        delay = self.base_s
        while True:
            try:
                result = await op()
            except Exception as exc:
                if not transient(exc):
                    raise
                self._mark_down(dependency, exc)
                if self.stop.is_set():
                    raise Abandoned(f"{dependency} unavailable while stopping") from exc
                if await wait_event(self.stop, delay):
                    raise Abandoned(f"{dependency} unavailable while stopping") from exc
                self.retries += 1
                delay = min(self.cap_s, delay * 2)
                continue
            self._mark_up(dependency)
            return result

    async def wait_up(self, seconds: float) -> None:
        """Wait until nothing is down, the worker stops, or `seconds` pass."""
        if self._down and not self.stop.is_set():
            await wait_event(self.recovered, seconds)

    def _mark_down(self, dependency: str, exc: BaseException) -> None:
        if dependency not in self._down:
            log.warning("dependency down: not ready, fetching paused, retrying with backoff",
                        extra=fields(dependency=dependency, error=repr(exc)))
            self._down[dependency] = time.monotonic()
            self.recovered.clear()
            self._report()

    def _mark_up(self, dependency: str) -> None:
        since = self._down.pop(dependency, None)
        if since is None:
            return
        log.info("dependency back", extra=fields(
            dependency=dependency, down_s=round(time.monotonic() - since, 3)))
        self._report()
        if not self._down:
            self.recovered.set()

    def _report(self) -> None:
        self.health.reasons = [f"{d} unavailable" for d in sorted(self._down)]
