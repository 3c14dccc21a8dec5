"""One reader of the pool's results topic per gateway process: no consumer group, every
partition assigned and read from its end offset at start, so it sees every answer produced
after the gateway came up and nothing older. Waiters register a request id *before* the request
is produced; the first result per id completes its future (later copies are ignored). Results
nobody waits for are dropped here: the job record in Redis keeps them (GET /v1/generations/{id}).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from imagegen_api.messages import GenerationResult
from pydantic import ValidationError

log = logging.getLogger(__name__)


class ResultFanout:
    def __init__(self, bootstrap: str, topic: str, *, client_id: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._client_id = client_id
        self._waiters: dict[str, asyncio.Future[GenerationResult]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.assigned = False

    async def start(self, partitions: set[int]) -> None:
        """Read `partitions` of the topic (the producer's metadata knows them) from their end."""
        if not partitions:
            raise RuntimeError(f"results topic {self._topic} has no partitions (missing?)")
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap,
                                          client_id=self._client_id, group_id=None,
                                          enable_auto_commit=False, fetch_max_wait_ms=100)
        await self._consumer.start()
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        ends = await self._consumer.end_offsets(tps)
        for tp in tps:
            self._consumer.seek(tp, ends[tp])
        self.assigned = True
        self._task = asyncio.create_task(self._read(), name="results-fanout")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        for fut in self._waiters.values():
            fut.cancel()
        self._waiters.clear()

    def expect(self, request_id: str) -> asyncio.Future[GenerationResult]:
        """Register before producing; `forget` when done (answered, timed out, caller gone)."""
        fut = self._waiters.get(request_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._waiters[request_id] = fut
        return fut

    def forget(self, request_id: str) -> None:
        self._waiters.pop(request_id, None)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for msgs in batches.values():
                for msg in msgs:
                    if msg.value is None:
                        continue
                    try:
                        result = GenerationResult.from_bytes(msg.value)
                    except ValidationError:
                        log.warning("unreadable result at %s:%s", msg.partition, msg.offset)
                        continue
                    fut = self._waiters.get(result.request_id)
                    if fut is not None and not fut.done():
                        fut.set_result(result)
