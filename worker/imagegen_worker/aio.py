"""Small asyncio helpers of the worker's loops (the client, which may not import the worker,
keeps its own few-line copy of `wait_event`).

`wait_event` uses asyncio.timeout rather than asyncio.wait_for: on Python 3.11, wait_for can
swallow a cancellation that arrives while the awaited event is being set, leaving the task
unstoppable (seen here on shutdown: the heartbeat task never ended).
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until `event` is set or `seconds` pass (None: no limit); True if it is set."""
    if seconds is None:
        await event.wait()
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
