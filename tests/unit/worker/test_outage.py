"""Outages of storage and Kafka (issue 17): retried with backoff, not ready while down, given up
when the worker stops; a failure that is not an outage is raised at once."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from imagegen_worker.outage import KAFKA, STORAGE, Abandoned, Outages, kafka_transient
from imagegen_worker.server import Health


def ready_health() -> Health:
    return Health(models_loaded=True, warmed_up=True, joined=True)


class Flaky:
    """An operation failing `times` times with `exc`, then answering; records readiness seen."""

    def __init__(self, times: int, exc: Exception, health: Health) -> None:
        self.left = times
        self.exc = exc
        self.health = health
        self.calls = 0
        self.ready_seen: list[bool] = []
        self.failed = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        self.ready_seen.append(self.health.ready())
        if self.left:
            self.left -= 1
            self.failed.set()
            raise self.exc
        return "ok"


async def test_an_outage_is_retried_with_backoff_and_reported_not_ready() -> None:
    health = ready_health()
    outages = Outages(health, base_s=0.001, cap_s=0.004)
    op = Flaky(4, ConnectionError("refused"), health)
    assert await outages.retry(STORAGE, op) == "ok"
    assert op.calls == 5 and outages.retries == 4
    assert op.ready_seen == [True, False, False, False, False]  # NotReady while down
    assert health.reasons == [] and health.ready() and outages.down == frozenset()


async def test_fetching_waits_while_down() -> None:
    health = ready_health()
    outages = Outages(health, base_s=0.001)
    op = Flaky(1, KafkaTimeoutError(), health)
    task = asyncio.create_task(outages.retry(KAFKA, op))
    await op.failed.wait()  # the retry task marked it down in the same step
    assert health.reasons == ["kafka unavailable"] and not outages.recovered.is_set()
    await task
    await outages.wait_up(5)
    assert outages.recovered.is_set()


async def test_a_failure_that_is_not_an_outage_is_raised_at_once() -> None:
    health = ready_health()
    outages = Outages(health, base_s=0.001)
    op = Flaky(1, MessageSizeTooLargeError(), health)
    with pytest.raises(MessageSizeTooLargeError):
        await outages.retry(KAFKA, op, transient=kafka_transient)
    assert op.calls == 1 and outages.down == frozenset() and health.ready()


async def test_stopping_during_an_outage_gives_up_the_message() -> None:
    health = ready_health()
    outages = Outages(health, base_s=60, cap_s=60)  # would wait a minute between tries
    op = Flaky(1000, KafkaConnectionError("broker down"), health)
    task = asyncio.create_task(outages.retry(KAFKA, op, transient=kafka_transient))
    await op.failed.wait()  # the retry task marked it down in the same step
    outages.stop.set()
    with pytest.raises(Abandoned):
        await task
    assert op.calls == 1


@pytest.mark.parametrize(("exc", "transient"), [
    (KafkaTimeoutError(), True),
    (KafkaConnectionError("x"), True),
    (TimeoutError(), True),
    (MessageSizeTooLargeError(), False),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), False),
    (ValueError("bad"), False),
])
def test_kafka_transient(exc: Exception, transient: bool) -> None:
    assert kafka_transient(exc) is transient
