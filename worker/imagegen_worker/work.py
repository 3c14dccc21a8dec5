"""Shapes that flow through the worker: where a message came from (MessageRef), an accepted
request in this worker's hands (Work), and the model runner as the worker uses it (Runner).

Created by `intake`, scheduled by `scheduler`, run by `batchrun`, answered by `respond`.
`Runner` is the structural type of pipelines.ModelRunner, so tests can pass a small fake.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .validate import ValidRequest

if TYPE_CHECKING:
    from PIL import Image

    from .pipelines import ImageJob


class Runner(Protocol):
    name: str
    revision: str
    device: str

    def count_tokens(self, prompt: str) -> int: ...

    def prompt_window(self) -> int: ...

    def generate(self, jobs: list[ImageJob]) -> list[Image.Image]: ...

    def warmup(self) -> None: ...


@dataclass(frozen=True)
class MessageRef:
    """One Kafka message: its coordinates and raw bytes (kept for the dead-letter topic)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def partition_key(self) -> tuple[str, int]:
        return (self.topic, self.partition)


@dataclass(eq=False)
class Work:
    """An accepted request between intake and its answer."""

    request: ValidRequest
    ref: MessageRef
    compat_key: Hashable  # model + pipeline batch_key: what may share a batch
    fetched_at: float = field(default_factory=time.time)  # wall clock
    attempts: int = 0  # attempts started so far (from the job record)
    seeds: list[int] | None = None  # per image, fixed at the first attempt
    epoch: int = 0  # consumer epoch when fetched (see Consumer.epoch)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def tier(self) -> str:
        return self.request.tier

    @property
    def origin(self) -> float:
        """When the request's clock started: its submitted_at, else when it was fetched."""
        sub = self.request.submitted_at
        return sub if sub is not None and sub <= self.fetched_at else self.fetched_at
