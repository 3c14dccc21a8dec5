"""Faults for the chaos suite (tests/chaos): stop, kill or freeze ONE component of the local
stack, and bring it back, through the stack's own pid files (procs) and its own start code
(`dev/stack up --no-build`, which restarts only what is down and waits for its health check).

The stack is shared. Whoever injects a fault holds /tmp/imagegen-stack.lock and undoes it before
letting go: `outage()` restores in a `finally`, and every fault also starts a detached watchdog
that undoes it anyway after a deadline, should the caller die first (SIGKILL, a shell timeout).

    python -m localstack.chaos watchdog --after 120 --thaw kafka   (run from dev/; internal)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from . import procs
from .components import by_name
from .layout import DEV, Layout, layout

Mode = Literal["stop", "kill", "freeze"]

# Components a scenario may take away; the control plane and the pod runner stay up.
FAULTABLE = ("kafka", "redis", "minio")


class ChaosError(RuntimeError):
    """A component could not be faulted or restored; the message names it."""


def _pid(lay: Layout, name: str) -> int:
    if name not in FAULTABLE:
        raise ChaosError(f"{name}: not a component the chaos suite may fault ({FAULTABLE})")
    pid = procs.read_pid(lay.pids, name)
    if pid is None:
        raise ChaosError(f"{name}: not running (start the stack with `dev/stack up`)")
    return pid


def healthy(name: str, lay: Layout | None = None) -> bool:
    lay = lay or layout()
    return procs.read_pid(lay.pids, name) is not None and by_name(name).healthy(lay)


def freeze(name: str, lay: Layout | None = None) -> None:
    """SIGSTOP the component's process group: its sockets stay open and nothing answers."""
    os.killpg(_pid(lay or layout(), name), signal.SIGSTOP)


def thaw(name: str, lay: Layout | None = None) -> None:
    lay = lay or layout()
    pid = procs.read_pid(lay.pids, name)
    if pid is not None:
        os.killpg(pid, signal.SIGCONT)


def kill(name: str, lay: Layout | None = None) -> None:
    """SIGKILL the component's process group (a crash: no clean shutdown) and wait it out."""
    lay = lay or layout()
    pid = _pid(lay, name)
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while procs.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def stop(name: str, lay: Layout | None = None) -> None:
    """SIGTERM, then SIGKILL after the grace (the stack's own stop)."""
    lay = lay or layout()
    _pid(lay, name)
    procs.stop(name, pids=lay.pids)


def restore(lay: Layout | None = None, timeout: float = 240) -> None:
    """Thaw every faultable component, then restart whatever is down with the stack's own code;
    raises ChaosError naming a component that is still unhealthy."""
    lay = lay or layout()
    for name in FAULTABLE:
        thaw(name, lay)
    if all(healthy(n, lay) for n in FAULTABLE):
        return
    proc = subprocess.run([sys.executable, str(DEV / "stack"), "up", "--no-build"],
                          capture_output=True, text=True, timeout=timeout, check=False)
    sick = [n for n in FAULTABLE if not healthy(n, lay)]
    if proc.returncode != 0 or sick:
        raise ChaosError(f"stack not restored ({', '.join(sick) or 'dev/stack up failed'}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


@dataclass
class Watchdog:
    """A detached process that restores the stack after `after` seconds unless cancelled."""

    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, after: float) -> Watchdog:
        env = {**os.environ, "PYTHONPATH": str(DEV)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "localstack.chaos", "watchdog", "--after", str(after)],
            cwd=DEV, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        return cls(proc)

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def fault(name: str, mode: Mode, *, max_seconds: float) -> Iterator[None]:
    """Inject `mode` on `name` for the duration of the block, then restore it (always). The
    watchdog restores it after `max_seconds` + 60 s should this process never reach the end."""
    lay = layout()
    dog = Watchdog.start(after=max_seconds + 60)
    try:
        {"stop": stop, "kill": kill, "freeze": freeze}[mode](name, lay)
        yield
    finally:
        try:
            restore(lay)
        finally:
            dog.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m localstack.chaos")
    sub = parser.add_subparsers(dest="cmd", required=True)
    dog = sub.add_parser("watchdog", help="sleep, then thaw and restart faulted components")
    dog.add_argument("--after", type=float, required=True)
    sub.add_parser("restore", help="thaw and restart faulted components now")
    args = parser.parse_args()
    if args.cmd == "watchdog":
        time.sleep(args.after)
    restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())
