"""Leader election with a `coordination.k8s.io/v1` Lease: exactly one operator replica acts.

Called by startup before Kopf starts: a replica first acquires the Lease (a standby waits
here, serving only /healthz), then runs Kopf standalone while a background task renews the Lease.
A leader that cannot renew within the renew deadline, or sees another holder, has lost: the caller
exits the process at once (as kube-controller-manager does), and the Deployment restarts it as a
standby. On a graceful stop the Lease is released so a standby takes over without waiting.

The rules are client-go's `leaderelection` package, so they are known to be safe:
- expiry is judged by the *observer's* clock: a Lease counts as expired `leaseDurationSeconds`
  after this replica first saw its current record unchanged (renewTime in the object is
  informational), so clock skew between nodes does not matter;
- a leader gives up `renew_deadline` after the start of its last successful renewal, which is
  before any other replica can see the Lease expire (`lease_duration` after it saw that renewal);
- writes carry the resourceVersion read: of two replicas racing for a free Lease, the API server
  accepts one and answers 409 to the other.

The pure parts (records, observations, decisions, bodies) are unit-tested; `LeaderElector` is the
API part, using the operator's Kubernetes client with a timeout on every call.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .k8s import Kube, KubeError

log = logging.getLogger(__name__)

API_VERSION = "coordination.k8s.io/v1"
KIND = "Lease"
# client-go's JitterFactor: retries are spread over [retry, 1.2 x retry).
JITTER = 1.2


@dataclass(frozen=True)
class LeaseTimings:
    """Seconds, with controller-runtime's defaults (15 / 10 / 2)."""

    # How long a standby waits, after it last saw the Lease change, before taking it.
    lease_duration: float = 15.0
    # How long a leader keeps retrying a failed renewal before it gives up leadership.
    renew_deadline: float = 10.0
    # Pause between attempts to acquire or renew.
    retry_period: float = 2.0

    def validate(self) -> None:
        """The same checks as client-go's NewLeaderElector, naming the settings."""
        if self.retry_period <= 0:
            raise ValueError(f"lease retry period must be > 0, got {self.retry_period}")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(f"lease duration ({self.lease_duration} s) must be greater than "
                             f"the renew deadline ({self.renew_deadline} s)")
        if self.renew_deadline <= JITTER * self.retry_period:
            raise ValueError(f"lease renew deadline ({self.renew_deadline} s) must be greater "
                             f"than {JITTER} x the retry period ({self.retry_period} s)")

    @property
    def call_timeout(self) -> float:
        """Upper bound of one API call: a hung call must not outlive the renew deadline."""
        return max(1.0, min(self.renew_deadline / 2, 5 * self.retry_period))


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec, as read or as about to be written."""

    holder: str  # "" when released
    duration_seconds: int
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, obj: dict[str, Any]) -> LeaseRecord:
        spec = obj.get("spec") or {}
        return cls(holder=str(spec.get("holderIdentity") or ""),
                   duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   transitions=int(spec.get("leaseTransitions") or 0))

    def to_spec(self) -> dict[str, Any]:
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration_seconds,
                "acquireTime": self.acquire_time, "renewTime": self.renew_time,
                "leaseTransitions": self.transitions}


@dataclass(frozen=True)
class Observation:
    """A record and when (this process's monotonic clock) it was first seen unchanged."""

    record: LeaseRecord
    seen_at: float


def observe(previous: Observation | None, record: LeaseRecord, now: float) -> Observation:
    """The clock restarts only when the record changed (a renewal, a new holder)."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


class Action(enum.Enum):
    ACQUIRE = "acquire"  # the Lease is free, released or expired: take it
    RENEW = "renew"  # we hold it: renew
    WAIT = "wait"  # another replica holds it and it has not expired


def decide(observed: Observation | None, identity: str, now: float) -> Action:
    """What a replica named `identity` does about the Lease it observed (None: no Lease)."""
    if observed is None:
        return Action.ACQUIRE
    record = observed.record
    if record.holder == identity:
        return Action.RENEW
    if not record.holder:
        return Action.ACQUIRE
    if now >= observed.seen_at + record.duration_seconds:
        return Action.ACQUIRE
    return Action.WAIT


def micro_time(at: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claim(current: LeaseRecord | None, identity: str, timings: LeaseTimings,
          wall: datetime) -> LeaseRecord:
    """The record a replica writes to take (or keep) the Lease."""
    now = micro_time(wall)
    duration = max(1, round(timings.lease_duration))
    if current is not None and current.holder == identity:
        return replace(current, duration_seconds=duration, renew_time=now)
    transitions = current.transitions + 1 if current is not None else 0
    return LeaseRecord(holder=identity, duration_seconds=duration, acquire_time=now,
                       renew_time=now, transitions=transitions)


def released(current: LeaseRecord, wall: datetime) -> LeaseRecord:
    """The record a leader writes on a graceful stop: no holder, expiring in a second."""
    now = micro_time(wall)
    return LeaseRecord(holder="", duration_seconds=1, acquire_time=now, renew_time=now,
                       transitions=current.transitions)


def lease_body(namespace: str, name: str, record: LeaseRecord,
               resource_version: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version:
        meta["resourceVersion"] = resource_version  # optimistic concurrency: 409 if it moved
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta,
            "spec": record.to_spec()}


def jittered(period: float) -> float:
    return period * random.uniform(1.0, JITTER)


class LeadershipLost(RuntimeError):
    """Renewal failed for the whole renew deadline, or another replica holds the Lease."""


@dataclass
class LeaderElector:
    """Acquires, renews and releases one Lease for one identity (the pod name)."""

    kube: Kube
    namespace: str
    name: str
    identity: str
    timings: LeaseTimings
    _observed: Observation | None = None
    _resource_version: str | None = None
    # Monotonic time an attempt that ended holding the Lease *started*: the renew deadline
    # counts from there, since others measure expiry from when they saw that write.
    held_since_attempt: float = 0.0

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    async def _read(self) -> LeaseRecord | None:
        obj = await asyncio.wait_for(
            self.kube.get(API_VERSION, KIND, self.namespace, self.name),
            self.timings.call_timeout)
        if obj is None:
            self._observed, self._resource_version = None, None
            return None
        record = LeaseRecord.from_lease(obj)
        self._observed = observe(self._observed, record, time.monotonic())
        self._resource_version = obj.get("metadata", {}).get("resourceVersion")
        return record

    async def _write(self, record: LeaseRecord, *, create: bool) -> None:
        body = lease_body(self.namespace, self.name, record,
                          None if create else self._resource_version)
        call = self.kube.create(body) if create else self.kube.replace(body)
        stored = await asyncio.wait_for(call, self.timings.call_timeout)
        self._resource_version = stored.get("metadata", {}).get("resourceVersion")
        self._observed = Observation(record, time.monotonic())

    async def _attempt(self) -> Action:
        started = time.monotonic()
        current = await self._read()
        action = decide(self._observed, self.identity, time.monotonic())
        if action is not Action.WAIT:
            record = claim(current, self.identity, self.timings, datetime.now(UTC))
            await self._write(record, create=current is None)
            self.held_since_attempt = started
            if action is Action.ACQUIRE:
                log.info("leader election: %s acquired %s (transition %d)", self.identity,
                         self.where, record.transitions)
        return action

    async def try_acquire_or_renew(self, within: float | None = None) -> bool:
        """One attempt, bounded by `within` seconds (default: two calls' timeouts); True when this
        replica holds the Lease afterwards. A conflict (another replica wrote first), a timeout
        or an API error is a failed attempt, logged."""
        limit = 2 * self.timings.call_timeout if within is None else max(0.1, within)
        try:
            return await asyncio.wait_for(self._attempt(), limit) is not Action.WAIT
        except KubeError as err:
            if err.status == 409:
                log.info("leader election: %s lost the race for %s", self.identity, self.where)
            else:
                log.warning("leader election: %s: %s", self.where, err)
        except TimeoutError:
            log.warning("leader election: %s: no answer within %.1f s", self.where, limit)
        return False

    def holder(self) -> str:
        return self._observed.record.holder if self._observed else ""

    async def acquire(self) -> None:
        """Returns once this replica holds the Lease (a standby waits here)."""
        logged = ""
        while not await self.try_acquire_or_renew():
            if self.holder() and self.holder() != logged:
                logged = self.holder()
                log.info("leader election: standby, %s held by %s", self.where, logged)
            await asyncio.sleep(jittered(self.timings.retry_period))

    async def hold(self) -> None:
        """Renews every retry period; raises LeadershipLost when the renew deadline passes
        without a successful renewal, or when another replica holds the Lease."""
        while True:
            await asyncio.sleep(self.timings.retry_period)
            deadline = self.held_since_attempt + self.timings.renew_deadline
            while True:
                if await self.try_acquire_or_renew(within=deadline - time.monotonic()):
                    break
                if self.holder() and self.holder() != self.identity:
                    raise LeadershipLost(f"{self.where} is now held by {self.holder()}")
                if time.monotonic() + self.timings.retry_period / 2 >= deadline:
                    raise LeadershipLost(f"{self.where} not renewed within the renew deadline "
                                         f"({self.timings.renew_deadline:g} s)")
                await asyncio.sleep(min(self.timings.retry_period / 2,
                                        max(0.0, deadline - time.monotonic())))

    async def release(self) -> None:
        """Hands the Lease back (graceful stop) so a standby takes it at its next retry."""
        try:
            current = await self._read()
            if current is None or current.holder != self.identity:
                return
            await self._write(released(current, datetime.now(UTC)), create=False)
            log.info("leader election: %s released %s", self.identity, self.where)
        except (KubeError, TimeoutError) as err:
            log.warning("leader election: could not release %s: %s", self.where, err)
