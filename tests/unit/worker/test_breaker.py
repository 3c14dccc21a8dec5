"""The Redis breaker of job records and heartbeats (issue 17): after a failure calls fail at once
for `retry_after`, then one call tries again; success closes it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from imagegen_worker.breaker import Breaker, Unavailable


async def test_breaker_fails_fast_then_retries(clock: Any) -> None:
    breaker = Breaker("job records", retry_after=5, clock=clock)
    calls: list[str] = []

    async def down() -> str:
        calls.append("down")
        raise TimeoutError("frozen")

    async def up() -> str:
        calls.append("up")
        return "ok"

    with pytest.raises(TimeoutError):
        await breaker.call(down)
    assert breaker.open and not breaker.available()
    with pytest.raises(Unavailable):
        await breaker.call(up)  # not asked: fails at once
    clock.advance(5)
    assert await breaker.call(up) == "ok"
    assert not breaker.open and breaker.available()
    assert calls == ["down", "up"]


async def test_an_error_of_one_call_does_not_open_it(clock: Any) -> None:
    breaker = Breaker("job records", retry_after=5, clock=clock)

    async def bad_key() -> None:
        "\ud800".encode()

    with pytest.raises(UnicodeEncodeError):
        await breaker.call(bad_key)
    assert not breaker.open and breaker.available()


async def test_after_the_pause_one_call_probes_while_the_others_fail_fast(clock: Any) -> None:
    breaker = Breaker("job records", retry_after=5, clock=clock)
    gate = asyncio.Event()

    async def down() -> None:
        raise TimeoutError("frozen")

    async def slow() -> str:
        await gate.wait()
        raise TimeoutError("still frozen")

    with pytest.raises(TimeoutError):
        await breaker.call(down)
    clock.advance(5)
    probe = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0)
    with pytest.raises(Unavailable):
        await breaker.call(down)  # the probe is out: nobody else waits on a frozen Redis
    gate.set()
    with pytest.raises(TimeoutError):
        await probe
    assert breaker.open and not breaker.available()


async def test_with_a_probe_every_call_fails_fast_until_the_probe_succeeds() -> None:
    pings: list[str] = []
    healthy = asyncio.Event()

    async def ping() -> None:
        pings.append("ping")
        if not healthy.is_set():
            raise TimeoutError("frozen")
        healthy.clear()  # answer once, then let the test look

    breaker = Breaker("job records", retry_after=0.001, probe=ping)

    async def frozen() -> None:
        raise TimeoutError("frozen")

    async def fine() -> str:
        return "ok"

    with pytest.raises(TimeoutError):
        await breaker.call(frozen)
    for _ in range(3):  # open: nothing is asked, however long it has been
        with pytest.raises(Unavailable):
            await breaker.call(fine)
        await asyncio.sleep(0.005)
    assert pings and breaker.open
    healthy.set()
    assert breaker._prober is not None
    await breaker._prober  # ends once a probe succeeded
    assert not breaker.open
    assert await breaker.call(fine) == "ok"
    await breaker.close()
