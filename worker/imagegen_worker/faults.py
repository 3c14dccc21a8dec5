"""Test-only fault hooks, read from IMAGEGEN_FAULT_INJECT. Empty (the default) does nothing.

The integration tests use them to exercise paths a healthy tiny model never takes:

    IMAGEGEN_FAULT_INJECT="fail_prompt=POISON;delay_generate=1.5"

- fail_prompt=<text>: a batch containing a prompt with <text> raises before generation, as a
  pipeline error would (retries, then the dead-letter topic).
- kill_prompt=<text>: a batch containing a prompt with <text> SIGKILLs its own worker process
  before generation (after its attempt is counted), as a request that crashes the process would.
- delay_generate=<seconds>: sleep before each batch, to make "kill it mid-batch" deterministic.
- kafka_down=<path>: while the file <path> exists, publishing answers fails as in a broker
  outage (KafkaConnectionError), so that a test can cut the worker off Kafka on cue.

The operator never sets this variable; a worker logs a warning at start when it is set.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

from aiokafka.errors import KafkaConnectionError

log = logging.getLogger(__name__)


class InjectedFault(RuntimeError):
    """Raised by the fail_prompt hook."""


@dataclass(frozen=True)
class Faults:
    fail_prompt: str | None = None
    kill_prompt: str | None = None
    delay_generate: float = 0.0
    kafka_down: str | None = None

    @property
    def active(self) -> bool:
        return (self.fail_prompt is not None or self.kill_prompt is not None
                or self.delay_generate > 0 or bool(self.kafka_down))

    @classmethod
    def parse(cls, spec: str) -> Faults:
        fail: str | None = None
        kill: str | None = None
        delay = 0.0
        kafka_down: str | None = None
        for part in spec.split(";"):
            if not part.strip():
                continue
            name, _, value = part.partition("=")
            name = name.strip()
            if name == "fail_prompt" and value:
                fail = value
            elif name == "kill_prompt" and value:
                kill = value
            elif name == "delay_generate":
                delay = float(value)
            elif name == "kafka_down" and value:
                kafka_down = value
            else:
                raise ValueError(f"unknown fault hook {part!r} in IMAGEGEN_FAULT_INJECT")
        return cls(fail_prompt=fail, kill_prompt=kill, delay_generate=delay,
                   kafka_down=kafka_down)

    def check_prompts(self, prompts: list[str]) -> None:
        if self.kill_prompt is not None and any(self.kill_prompt in p for p in prompts):
            log.warning("injected fault: SIGKILL for prompts containing %r", self.kill_prompt)
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fail_prompt is not None and any(self.fail_prompt in p for p in prompts):
            raise InjectedFault(f"injected failure for prompts containing {self.fail_prompt!r}")

    def check_publish(self) -> None:
        if self.kafka_down is not None and os.path.exists(self.kafka_down):
            raise KafkaConnectionError(f"injected broker outage ({self.kafka_down} exists)")
