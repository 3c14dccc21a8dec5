"""A stop signal while the worker is still importing (before its event loop handles signals)
ends the process like a drain, exit 0, not killed by the signal."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

STARTING = """
import os, signal, time
from imagegen_worker import main
if {install}:
    main.stop_cleanly_while_starting()
os.kill(os.getpid(), signal.{sig})
time.sleep(30)  # the imports a real worker would still be doing
raise SystemExit(3)
"""


def _exit_code(sig: str, install: bool) -> int:
    code = STARTING.format(sig=sig, install=install)
    return subprocess.run([sys.executable, "-c", code], timeout=20).returncode


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stop_while_starting_exits_zero(sig: str) -> None:
    assert _exit_code(sig, install=True) == 0


def test_without_it_sigterm_kills_the_process() -> None:
    # The control: the default action is death by the signal (Kubernetes reports 143).
    assert _exit_code("SIGTERM", install=False) == -signal.SIGTERM
