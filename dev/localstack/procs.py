"""Background processes of the stack: start in their own process group with a pid file and a
log file, find them again by pid, stop them (SIGTERM, then SIGKILL) and verify they are gone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def pid_file(pids: Path, name: str) -> Path:
    return pids / f"{name}.pid"


def read_pid(pids: Path, name: str) -> int | None:
    try:
        pid = int(pid_file(pids, name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start(name: str, argv: Sequence[str], *, pids: Path, logs: Path,
          env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
    pids.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{name}.log", "ab")
    log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
    log.flush()
    proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env=dict(env) if env is not None else None, cwd=cwd)
    pid_file(pids, name).write_text(str(proc.pid))
    return proc.pid


def stop(name: str, *, pids: Path, grace: float = 10.0) -> bool:
    """Stop a component's process group; True if something was running."""
    pid = read_pid(pids, name)
    pid_file(pids, name).unlink(missing_ok=True)
    if pid is None:
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return True
            time.sleep(0.1)
    return True


def log_tail(logs: Path, name: str, lines: int = 30) -> str:
    try:
        return "\n".join((logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
