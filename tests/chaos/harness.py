"""The chaos harness: a pool of real worker processes kept at a size the way a Deployment keeps
it (a worker that exits by itself is replaced and counted as a restart), a closed-loop load on
it, a fault in the middle, and an audit of every message on the results and dead-letter topics
afterwards. Pools, workers and the client come from the worker integration harness; this module
adds only what a chaos run needs on top: the supervisor (`Crew`), the load (`Load`), the audit
(`audit`) and the figures (`Figures`, written as JSON for bench/chaos_report.py).

Durations scale with IMAGEGEN_CHAOS_SCALE (1 = the full run of docs/reliability.md; CI uses less).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from imagegen_api.messages import GenerationRequest, GenerationResult

from tests.chaos.figures import Figures, Signature, divergent, rate, recovery_seconds
from tests.integration.worker.harness import PARTITIONS, TIERS, Pool, Worker, request

SCALE = float(os.environ.get("IMAGEGEN_CHAOS_SCALE", "1"))
# Each batch sleeps this long before generating: a worker's throughput is bounded by the sleep
# rather than by the two shared CPU cores, so "normal" is steady enough to compare outages with.
WORKER_FAULTS = "delay_generate=0.25"


def seconds(full: float, *, least: float = 5.0) -> float:
    """A phase of `full` seconds in the full run, scaled (never below `least`)."""
    return max(least, full * SCALE)


# --- the workers ------------------------------------------------------------------------------


@dataclass
class Crew:
    """`size` workers of `pool`, supervised: an exit nobody asked for is a restart."""

    pool: Pool
    size: int
    faults: str = WORKER_FAULTS
    live: list[Worker] = field(default_factory=list)
    retired: list[Worker] = field(default_factory=list)  # killed or drained on purpose
    restarts: list[tuple[str, int | None, str]] = field(default_factory=list)
    kills: int = 0
    initial: int = 0  # the size it started at (figures)
    drain_exits: list[int | None] = field(default_factory=list)
    unclean: list[tuple[str, int | None, str]] = field(default_factory=list)  # name, code, tail
    _task: asyncio.Task[None] | None = None
    _reaping: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.initial = self.size
        for _ in range(self.size):
            self.live.append(self.pool.start_worker(faults=self.faults))
        for worker in self.live:
            await self.pool.ready(worker)
        self._task = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        while True:
            for worker in list(self.live):
                code = worker.proc.poll()
                if code is not None:
                    self.live.remove(worker)
                    self.restarts.append((worker.name, code, worker.tail(8)))
                    self.live.append(self.pool.start_worker(faults=self.faults))
            await asyncio.sleep(0.3)

    def kill_random(self) -> str:
        """SIGKILL one worker (an OOM kill, a lost node) and start its replacement at once."""
        victim = random.choice([w for w in self.live if w.proc.poll() is None])
        self.live.remove(victim)
        self.retired.append(victim)
        victim.proc.kill()
        self.kills += 1
        self.live.append(self.pool.start_worker(faults=self.faults))
        return victim.name

    async def scale(self, size: int) -> None:
        """Start workers, or SIGTERM the oldest ones (they drain and exit 0)."""
        while len(self.live) < size:
            self.live.append(self.pool.start_worker(faults=self.faults))
        leaving = self.live[: max(0, len(self.live) - size)]
        for worker in leaving:
            self.live.remove(worker)
            self.retired.append(worker)
            worker.proc.send_signal(signal.SIGTERM)
        self.size = size
        if leaving:
            self._reaping.append(asyncio.create_task(self._reap(leaving)))

    async def _reap(self, leaving: list[Worker]) -> None:
        for worker in leaving:
            code = await asyncio.to_thread(_wait, worker, 60)
            self.drain_exits.append(code)
            if code != 0:
                self.unclean.append((worker.name, code, worker.tail(12)))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*self._reaping)
        await asyncio.to_thread(self.pool.stop_all)


def _wait(worker: Worker, timeout: float) -> int | None:
    try:
        return worker.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # still running after the grace: the drain hung
        return None


# --- the load ---------------------------------------------------------------------------------


@dataclass
class Load:
    """Keeps `outstanding` requests unanswered (closed loop), half of them unseeded, over the
    three tiers; a share of answered ids is sent again (a client retry) to test idempotency.
    A produce that fails (Kafka down) is retried with the same id until it is acknowledged."""

    client: Any  # the pool's client (Pool.client())
    outstanding: int
    unseeded: float = 0.5
    resend: float = 0.1
    sent: dict[str, GenerationRequest] = field(default_factory=dict)  # acknowledged by Kafka
    resent: set[str] = field(default_factory=set)
    produce_errors: int = 0
    _n: int = 0
    _seen: set[str] = field(default_factory=set)

    def _new(self) -> GenerationRequest:
        self._n += 1
        seed = None if random.random() < self.unseeded else 10_000 + self._n
        return request(f"chaos load {self._n}", tier=TIERS[self._n % 3], seed=seed)

    async def run(self, stop: asyncio.Event) -> None:
        unacked: list[GenerationRequest] = []
        while not stop.is_set():
            answered = self.client.results
            pending = sum(1 for rid in self.sent if rid not in answered)
            batch = unacked or [self._new() for _ in range(max(0, self.outstanding - pending))]
            fresh = [rid for rid in answered if rid in self.sent and rid not in self._seen]
            self._seen.update(fresh)
            again = [self.sent[rid] for rid in fresh if random.random() < self.resend]
            try:
                if batch or again:
                    await asyncio.wait_for(self.client.submit([*batch, *again]), 45)
                for req in batch:
                    self.sent[req.request_id] = req
                self.resent.update(r.request_id for r in again)
                unacked = []
            except Exception:  # KafkaError, timeout: the broker is away; same ids next time
                self.produce_errors += 1
                unacked = batch
                await asyncio.sleep(1.0)
            await asyncio.sleep(0.05)

    def answer_times(self) -> list[float]:
        """Monotonic arrival of the first answer of each request this load sent."""
        got = self.client.received_at
        return sorted(got[rid] for rid in self.sent if rid in got)


# --- the audit --------------------------------------------------------------------------------


@dataclass
class Audit:
    results: dict[str, list[GenerationResult]]
    unreadable: int
    dead_letters: list[dict[str, Any]]

    @staticmethod
    def signature(result: GenerationResult) -> Signature:
        """What every result of one id must share: the status and the images."""
        return (result.status, tuple((i.key, i.sha256, i.seed) for i in result.images))

    def divergent(self, ids: set[str] | None = None) -> dict[str, list[Signature]]:
        sigs = {rid: [self.signature(r) for r in rs] for rid, rs in self.results.items()}
        return divergent(sigs, ids)

    def dlq_reasons(self) -> dict[str, int]:
        return dict(Counter(str((d.get("error") or {}).get("code", "?"))
                            for d in self.dead_letters))


async def audit(pool: Pool) -> Audit:
    """Every message on the pool's results topic and DLQ (the pool is new: from offset 0)."""
    kafka = pool.config.kafka
    results: dict[str, list[GenerationResult]] = {}
    unreadable = 0
    for value in await read_topic(pool.stack.kafka_bootstrap, kafka.results_topic, PARTITIONS):
        try:
            res = GenerationResult.from_bytes(value)
        except ValueError:
            unreadable += 1
            continue
        results.setdefault(res.request_id, []).append(res)
    letters = [json.loads(v) for v in await read_topic(pool.stack.kafka_bootstrap,
                                                        kafka.dlq_topic, 1)]
    return Audit(results, unreadable, letters)


async def read_topic(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    """Every value on `topic` (partitions 0..n-1, as make_pool made them), first to last."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    out: list[bytes] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        # An explicit seek: seek_to_beginning's lazy reset was seen to report the end offset.
        for tp, first in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, first)
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                out.extend(m.value for m in batch.get(tp, []) if m.value is not None)
    finally:
        await consumer.stop()
    return out


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Run:
    figures: Figures
    audit: Audit
    load: Load
    crew: Crew

    @property
    def lost_ids(self) -> set[str]:
        return {rid for rid in self.load.sent if rid not in self.audit.results}

    def explain(self) -> str:
        """What a failing assertion prints: the figures and the first offenders."""
        restarts = "\n".join(f"  {n} exited {c}:\n{t}" for n, c, t in self.crew.restarts[:3])
        unclean = "\n".join(f"  {n} drained with exit {c}:\n{t}"
                            for n, c, t in self.crew.unclean[:3])
        return (f"{json.dumps(asdict(self.figures), indent=1)}\nlost: {sorted(self.lost_ids)[:5]}"
                f"\ndivergent: {list(self.audit.divergent(set(self.load.sent)).items())[:3]}"
                f"\nrestarts:\n{restarts}\nunclean drains:\n{unclean}")


Fault = Callable[[], Awaitable[None]]


async def chaos_run(name: str, pool: Pool, crew: Crew, *, fault: Fault, baseline_s: float,
                    recover_s: float, outstanding: int = 24, drain_within: float = 180,
                    resend: float = 0.1) -> Run:
    """Load → `baseline_s` of normal service → `fault()` (it returns when the fault is undone)
    → `recover_s` of service → stop the load, wait for every answer, audit."""
    started = time.monotonic()
    async with pool.client() as client:
        load = Load(client, outstanding=outstanding, resend=resend)
        stop = asyncio.Event()
        task = asyncio.create_task(load.run(stop))
        await asyncio.sleep(baseline_s)
        t0 = time.monotonic()
        try:
            await fault()
        finally:
            t1 = time.monotonic()
        await asyncio.sleep(recover_s)
        stop.set()
        await task
        await client.wait(list(load.sent), within=drain_within)
        await asyncio.sleep(1.0)  # a late duplicate shows up here
        lag = await pool.wait_lag_zero(within=60)
        times = load.answer_times()
    found = await audit(pool)
    sent = set(load.sent)
    answered = sent & set(found.results)
    statuses = Counter(found.results[rid][0].status for rid in answered)
    window = min(10.0, baseline_s - 3)
    normal = rate(times, t0 - window, t0)
    fig = Figures(
        scenario=name, scale=SCALE, workers=crew.initial, sent=len(sent), answered=len(answered),
        lost=len(sent - answered), divergent=len(found.divergent(sent)),
        duplicate_messages=sum(len(found.results[r]) - 1 for r in answered),
        client_retries=len(load.resent),
        statuses=dict(statuses),
        failed_ids=sum(1 for rid in answered
                       if any(r.status == "failed" for r in found.results[rid])),
        worker_restarts=len(crew.restarts), worker_kills=crew.kills,
        unclean_drains=sum(1 for c in crew.drain_exits if c != 0),
        dlq=found.dlq_reasons(), lag_after_drain=lag, produce_errors=load.produce_errors,
        normal_rps=round(normal, 2), fault_s=round(t1 - t0, 1),
        outage_fraction=round(rate(times, t0, t1) / normal, 2) if normal and t1 > t0 else None,
        recovery_s=recovery_seconds(times, after=t1, normal=normal, until=t1 + recover_s)
        if normal else None,
        wall_s=round(time.monotonic() - started, 1),
    )
    return Run(fig, found, load, crew)
