"""`imagegen-worker`: the worker pod's entry point.

    imagegen-worker [run]            serve the pool (settings from the environment, see settings)
    imagegen-worker prefetch ...     download model weights into the cache volume (prefetch.main)
    imagegen-worker drain [--wait S] ask the local worker to drain (a preStop hook), wait for it

Exit codes of `run`: 0 after a clean drain (SIGTERM/SIGINT), 1 when the worker cannot go on
(bad config, model load failure, results cannot be published), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from imagegen_api import naming

from . import logs
from .settings import Settings

log = logging.getLogger("imagegen_worker")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "prefetch":
        from . import prefetch

        return int(prefetch.main(args[1:]) or 0)
    parser = argparse.ArgumentParser(prog="imagegen-worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="serve the pool (default)")
    drain = sub.add_parser("drain", help="ask the local worker to drain (preStop hook)")
    drain.add_argument("--wait", type=float, default=60.0,
                       help="seconds to wait for the drain to finish (0: do not wait)")
    drain.add_argument("--port", type=int, default=None,
                       help=f"worker HTTP port (default ${naming.ENV_HTTP_PORT} or "
                            f"{naming.WORKER_HTTP_PORT})")
    sub.add_parser("prefetch", help="download model weights (see imagegen-worker prefetch -h)")
    ns = parser.parse_args(args)
    if ns.command == "drain":
        return drain_local(ns.port, ns.wait)
    return run()


def stop_cleanly_while_starting() -> None:
    """Until `WorkerApp.run` installs its own handlers, SIGTERM/SIGINT exit 0 at once.

    Importing torch and diffusers takes seconds (tens on a busy node); a pod deleted in that
    window (a scale-down right after a scale-up) holds nothing yet — no partitions, no heartbeat,
    no job — so it stops like a drained worker instead of dying of the signal (exit 143)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_before_start)


def _exit_before_start(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run() -> int:
    stop_cleanly_while_starting()
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"imagegen-worker: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, worker=settings.pod_name)
    try:
        config = settings.load_config()
    except (OSError, ValueError) as exc:
        log.error("cannot load the worker config", extra=logs.fields(
            path=str(settings.config_path), error=str(exc)))
        return 1

    from .app import WorkerApp

    app = WorkerApp(settings, config)
    code = asyncio.run(app.run())
    if app.abandoned_threads:
        # A model load cannot be interrupted; do not wait for it to exit.
        logging.shutdown()
        os._exit(code)
    return code


def drain_local(port: int | None, wait: float) -> int:
    """POST /drain to the worker on localhost, then poll GET /drain until drained or `wait`."""
    port = port or int(os.environ.get(naming.ENV_HTTP_PORT) or naming.WORKER_HTTP_PORT)
    url = f"http://127.0.0.1:{port}/drain"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as r:
            state = json.load(r)
    except (urllib.error.URLError, OSError) as exc:
        print(f"imagegen-worker drain: worker not reachable at {url}: {exc}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + wait
    while not state.get("drained") and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                state = json.load(r)
        except (urllib.error.URLError, OSError):
            break  # the worker went away: nothing left to drain
    print(json.dumps(state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
