"""Test-only fault hooks, read from IMAGEGEN_FAULT_INJECT. Empty (the default) does nothing.

The integration tests use them to exercise paths a healthy tiny model never takes:

    IMAGEGEN_FAULT_INJECT="fail_prompt=POISON;delay_generate=1.5"

- fail_prompt=<text>: a batch containing a prompt with <text> raises before generation, as a
  pipeline error would (retries, then the dead-letter topic).
- delay_generate=<seconds>: sleep before each batch, to make "kill it mid-batch" deterministic.

The operator never sets this variable; a worker logs a warning at start when it is set.
"""

from __future__ import annotations

from dataclasses import dataclass


class InjectedFault(RuntimeError):
    """Raised by the fail_prompt hook."""


@dataclass(frozen=True)
class Faults:
    fail_prompt: str | None = None
    delay_generate: float = 0.0

    @property
    def active(self) -> bool:
        return self.fail_prompt is not None or self.delay_generate > 0

    @classmethod
    def parse(cls, spec: str) -> Faults:
        fail: str | None = None
        delay = 0.0
        for part in spec.split(";"):
            if not part.strip():
                continue
            name, _, value = part.partition("=")
            name = name.strip()
            if name == "fail_prompt" and value:
                fail = value
            elif name == "delay_generate":
                delay = float(value)
            else:
                raise ValueError(f"unknown fault hook {part!r} in IMAGEGEN_FAULT_INJECT")
        return cls(fail_prompt=fail, delay_generate=delay)

    def check_prompts(self, prompts: list[str]) -> None:
        if self.fail_prompt is not None and any(self.fail_prompt in p for p in prompts):
            raise InjectedFault(f"injected failure for prompts containing {self.fail_prompt!r}")
