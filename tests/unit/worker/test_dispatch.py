"""What the dispatch loops decide without Kafka: a request redelivered after a crash runs alone
(issue 17), dead letters embed a bounded request."""

from __future__ import annotations

import json
from typing import Any

from imagegen_worker import validate
from imagegen_worker.dispatch import enqueue
from imagegen_worker.jobs import compat_key
from imagegen_worker.scheduler import TierScheduler
from imagegen_worker.validate import MAX_DEAD_LETTER_REQUEST_BYTES, bounded_request
from imagegen_worker.work import MessageRef, Work


def work(config: Any, rid: str, attempts: int, offset: int) -> Work:
    body = json.dumps({"request_id": rid, "prompt": "a fox"}).encode()
    request = validate.validate(body, key=rid.encode(), tier="fast", config=config,
                                count_tokens=lambda _m, t: len(t.split()), now=0.0,
                                fallback_id="f")
    assert isinstance(request, validate.ValidRequest)
    ref = MessageRef("t.fast", 0, offset, rid.encode(), body)
    return Work(request=request, ref=ref, compat_key=compat_key(request), attempts=attempts)


def test_a_redelivered_request_runs_alone(config: Any, clock: Any) -> None:
    scheduler: TierScheduler[Work] = TierScheduler(config.kafka.tiers, max_batch_size=4,
                                                   max_wait_ms=0, clock=clock)
    fresh = [work(config, f"n{i}", 0, i) for i in range(3)]
    crashed = work(config, "crashed", 1, 3)  # its attempt started on a worker that died
    for w in (fresh[0], crashed, fresh[1], fresh[2]):
        enqueue(scheduler, w)
    batches = []
    while (batch := scheduler.next_batch(flush=True)) is not None:
        batches.append([w.request_id for w in batch.items])
    assert ["crashed"] in batches
    assert sorted(rid for b in batches for rid in b) == ["crashed", "n0", "n1", "n2"]
    assert all(b == ["crashed"] or "crashed" not in b for b in batches)
    assert ["n0", "n1", "n2"] in batches  # fresh ones still share a batch


def test_dead_letters_embed_a_bounded_request() -> None:
    small = b'{"request_id": "r", "prompt": "x"}'
    assert bounded_request(small) == small.decode()
    huge = b'{"prompt": "' + b"x" * 5_000_000 + b'"}'
    text = bounded_request(huge)
    assert len(text.encode()) < MAX_DEAD_LETTER_REQUEST_BYTES + 100
    assert text.endswith("more bytes cut]")
