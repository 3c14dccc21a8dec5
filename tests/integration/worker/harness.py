"""The worker's integration harness: real `imagegen-worker run` subprocesses serving
builtin://tiny-sdxl on the CPU (64x64, 2 steps) for a pool of their own (own topics, group and
keys, so runs never see each other's messages), driven through the client; and the helpers
the in-process tests use to cut a dependency (a TCP proxy that refuses or blackholes, a private
redis-server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from imagegen_api import naming
from imagegen_api.messages import GenerationRequest
from imagegen_api.specs import (
    DEFAULT_TIER_SPECS,
    BatchingSpec,
    GenerationDefaults,
    ImageModelSpec,
    ModelLimits,
    SafetySpec,
)
from imagegen_api.workerconfig import (
    CacheSettings,
    KafkaSettings,
    ModelEntry,
    StorageSettings,
    WorkerConfig,
)
from imagegen_client import ImagegenClient, new_request_id

NAMESPACE = "itest"
PARTITIONS = 3
READY_TIMEOUT = 180.0
TIERS = ("turbo", "fast", "relax")


# --- harness ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_config(stack: Any, pool: str, *, batch: int = 4, max_attempts: int = 3,
                  bucket: str) -> WorkerConfig:
    tiers = list(DEFAULT_TIER_SPECS)
    spec = ImageModelSpec(
        source="builtin://tiny-sdxl", pipeline="sdxl", dtype="float32",
        defaults=GenerationDefaults(width=64, height=64, steps=2, guidance=5.0,
                                    sampler="euler"),
        limits=ModelLimits(max_pixels=128 * 128, max_steps=4, max_prompt_tokens=20,
                           max_images_per_request=2),
    )
    return WorkerConfig(
        namespace=NAMESPACE,
        pool=pool,
        models=[ModelEntry(name="tiny", spec=spec)],
        kafka=KafkaSettings(
            bootstrap_servers=None,  # from IMAGEGEN_KAFKA_BOOTSTRAP, as in a pod
            group=naming.consumer_group(NAMESPACE, pool),
            tier_topics={t.name: naming.tier_topic(NAMESPACE, pool, t.name) for t in tiers},
            results_topic=naming.results_topic(NAMESPACE, pool),
            dlq_topic=naming.dlq_topic(NAMESPACE, pool),
            tiers=tiers,
            max_attempts=max_attempts,
            max_poll_interval_ms=120_000,
        ),
        batching=BatchingSpec(max_batch_size=batch, max_wait_ms=20),
        cache=CacheSettings(ttl_seconds=600),
        storage=StorageSettings(bucket=bucket, url_ttl_seconds=600),
        safety=SafetySpec(blocklist=["forbidden phrase"]),
        heartbeat_seconds=1,
        job_ttl_seconds=3600,
    )


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, path: str) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` matching `labels` on /metrics."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            series, _, value = line.rpartition(" ")
            base, _, lab = series.partition("{")
            if base != name:
                continue
            if all(f'{k}="{v}"' in lab for k, v in labels.items()):
                total += float(value)
        return total

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


@dataclass
class Pool:
    """One pool's topics and config, and the worker processes serving it."""

    stack: Any
    name: str
    config_path: Path
    config: WorkerConfig
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, *, faults: str = "", name: str | None = None) -> Worker:
        name = name or f"{self.name}-w{len(self.workers)}"
        port = free_port()
        log_path = self.tmp / f"{name}.log"
        env = {
            **os.environ,
            naming.ENV_WORKER_CONFIG: str(self.config_path),
            naming.ENV_HTTP_PORT: str(port),
            naming.ENV_POD_NAME: name,
            naming.ENV_POD_NAMESPACE: NAMESPACE,
            naming.ENV_ROLE: "warm",
            naming.ENV_KAFKA_BOOTSTRAP: self.stack.kafka_bootstrap,
            naming.ENV_REDIS_URL: self.stack.redis_url,
            naming.ENV_S3_ENDPOINT: self.stack.s3_endpoint,
            naming.ENV_MODEL_CACHE: str(self.tmp / "models"),
            "AWS_ACCESS_KEY_ID": self.stack.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.stack.s3_secret_key,
            "IMAGEGEN_DEVICE": "cpu",
            "IMAGEGEN_FAULT_INJECT": faults,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        exe = Path(sys.executable).with_name("imagegen-worker")
        proc = subprocess.Popen([str(exe), "run"], env=env, stdout=log_path.open("wb"),
                                stderr=subprocess.STDOUT)
        worker = Worker(name, proc, port, log_path)
        self.workers.append(worker)
        return worker

    async def ready(self, worker: Worker, within: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if worker.proc.poll() is not None:
                pytest.fail(f"worker {worker.name} exited with {worker.proc.returncode}:\n"
                            f"{worker.tail()}")
            with contextlib.suppress(OSError):
                status, _ = await asyncio.to_thread(worker.get, "/readyz")
                if status == 200:
                    return
            await asyncio.sleep(0.3)
        pytest.fail(f"worker {worker.name} not ready after {within}s:\n{worker.tail()}")

    async def spawn(self, *, faults: str = "") -> Worker:
        worker = self.start_worker(faults=faults)
        await self.ready(worker)
        return worker

    def stop_all(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()

    def client(self) -> ImagegenClient:
        return ImagegenClient(self.stack.kafka_bootstrap, NAMESPACE, self.name,
                              redis_url=self.stack.redis_url)

    async def lag(self) -> int:
        """Σ (end offset - committed offset) over the tier partitions of the pool's group."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.kafka_bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.stack.kafka_bootstrap)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.config.kafka.group)
            tps = [TopicPartition(t, p) for t in self.config.kafka.tier_topics.values()
                   for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(tps)
            total = 0
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                total += ends[tp] - done
            return total
        finally:
            await consumer.stop()
            await admin.close()

    async def wait_lag_zero(self, within: float = 30.0) -> int:
        deadline = time.monotonic() + within
        lag = await self.lag()
        while lag and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            lag = await self.lag()
        return lag

    async def dead_letters(self) -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.stack.kafka_bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(self.config.kafka.dlq_topic, 0)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            # An explicit seek: seek_to_beginning's lazy reset was seen to make position()
            # report the end offset, so the loop below read nothing (the chaos audit found it).
            consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
            out: list[dict[str, Any]] = []
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                out.extend(json.loads(m.value) for m in batch.get(tp, []) if m.value)
            return out
        finally:
            await consumer.stop()


async def make_pool(stack: Any, tmp: Path, label: str, **config_kw: Any) -> Pool:
    name = f"{label}-{uuid.uuid4().hex[:6]}"
    bucket = f"itest-{uuid.uuid4().hex[:8]}"  # created by the worker when missing
    config = worker_config(stack, name, bucket=bucket, **config_kw)
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        topics = [NewTopic(t, PARTITIONS, 1) for t in config.kafka.tier_topics.values()]
        topics += [NewTopic(config.kafka.results_topic, PARTITIONS, 1),
                   NewTopic(config.kafka.dlq_topic, 1, 1)]
        await admin.create_topics(topics)
    finally:
        await admin.close()
    path = tmp / f"{name}.json"
    await asyncio.to_thread(path.write_text, config.dump_json())
    return Pool(stack, name, path, config, tmp)


@contextlib.asynccontextmanager
async def pool_of(stack: Any, tmp: Path, label: str, **config_kw: Any) -> AsyncIterator[Pool]:
    pool = await make_pool(stack, tmp, label, **config_kw)
    try:
        yield pool
    finally:
        await asyncio.to_thread(pool.stop_all)


# Redis outlives a test run and the cache key does not name the pool: a negative prompt unique
# to this run keeps seeded requests from being answered by an earlier run's cache entries.
RUN = uuid.uuid4().hex[:8]


def request(prompt: str, *, tier: str = "fast", seed: int | None = None,
            **kw: Any) -> GenerationRequest:
    kw.setdefault("negative_prompt", f"run {RUN}")
    return GenerationRequest(request_id=new_request_id("it"), prompt=prompt, tier=tier,
                             seed=seed, **kw)



async def wait_for_log(worker: Worker, msg: str, *, within: float, **match: Any) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for rec in worker.log_lines():
            if rec.get("msg") == msg and all(rec.get(k) == v for k, v in match.items()):
                return
        await asyncio.sleep(0.2)
    pytest.fail(f"no log line {msg!r} {match} from {worker.name}:\n{worker.tail()}")


async def wait_running(client: ImagegenClient, ids: list[str], *, within: float) -> str:
    """A request id whose job record says a worker is generating it now."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for rid in ids:
            record = await client.status(rid)
            if record is not None and record.state == "running":
                return rid
        await asyncio.sleep(0.1)
    pytest.fail("no request reached state running")


def start_redis(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"redis-server did not start on port {port}")



class TcpProxy:
    """A real TCP hop in front of a real server, to cut it off and bring it back.

    `down()`: the listening socket closes and open connections drop (connection refused, as a
    stopped server); `freeze()`: connections are accepted and held, bytes go nowhere (as a
    SIGSTOPped or blackholed server); `up()`: forwarding again, on the same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def up(self) -> None:
        self._thawed.set()
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._conns):
            w.close()
        self._conns.clear()

    async def freeze(self) -> None:
        await self.up()
        self._thawed.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._conns.add(up_writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    await self._thawed.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def until(check: Callable[[], bool], *, within: float, what: str) -> None:
    """Wait until `check()` holds (polling); fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"not within {within}s: {what}")
