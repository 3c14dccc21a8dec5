"""Benchmark (not a test): Kubernetes API requests per pool per minute of a running operator
(issue 10: indexes instead of GET/LIST per pass, no status PATCH when nothing changed).

Setup: the local stack, a fresh namespace with the tiny model and `--pools` GenerationPools
(no local-runner label: KWOK marks their GPU pods Ready at once, nothing consumes, the queues stay
empty: a pool at rest, the common case). The operator runs as a local process watching only that
namespace, with a `sitecustomize` hook on its PYTHONPATH that counts every HTTP request its aiohttp
sessions send (Kopf's and the operator's own client alike), by verb and resource. After the pools
are Ready and a settle period, the counts over `--seconds` are the figure.

`--operator-src DIR` (repeatable, e.g. an older checkout's `operator` and `api` folders from
`git archive`) runs another version of the operator for a before/after comparison on the same
stack, pools and settings:

    git archive 45dedb5 operator api | tar -x -C /tmp/before
    .venv/bin/python bench/api_requests.py --label before \\
        --operator-src /tmp/before/operator --operator-src /tmp/before/api
    .venv/bin/python bench/api_requests.py --label after

Watches are counted once per (re)connection; LIST includes Kopf's list before each watch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(ROOT))

from tests.integration.conftest import (  # noqa: E402
    OperatorProcess,
    apply_crds,
    kubectl_runner,
    pause_installed_operators,
    resume_installed_operators,
    start_stack,
    wait_for,
)

# Counts every aiohttp request of the operator process into $IMAGEGEN_BENCH_COUNTS (JSON).
HOOK = '''
import json, os, threading, urllib.parse
import aiohttp

_out = os.environ["IMAGEGEN_BENCH_COUNTS"]
_counts = {}
_lock = threading.Lock()
_orig = aiohttp.ClientSession._request


def _key(method, url):
    parts = urllib.parse.urlsplit(str(url))
    query = urllib.parse.parse_qs(parts.query)
    path = [p for p in parts.path.split("/") if p]
    if "namespaces" in path and len(path) > path.index("namespaces") + 2:
        rest = path[path.index("namespaces") + 2:]
    else:
        rest = path[3:] if path[:1] == ["apis"] else path[2:]
    resource = rest[0] if rest else "/".join(path)
    named = len(rest) > 1
    verb = method.upper()
    if verb == "GET":
        verb = "WATCH" if query.get("watch") == ["true"] else "GET" if named else "LIST"
    sub = "/" + rest[2] if len(rest) > 2 else ""
    return f"{verb} {resource}{sub}"


async def _request(self, method, str_or_url, *args, **kwargs):
    key = _key(method, str_or_url)
    with _lock:
        _counts[key] = _counts.get(key, 0) + 1
        tmp = _out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_counts, f)
        os.replace(tmp, _out)
    return await _orig(self, method, str_or_url, *args, **kwargs)


aiohttp.ClientSession._request = _request
'''


def pool(name: str, poll: int) -> dict[str, Any]:
    return {
        "apiVersion": "imagegen.dev/v1alpha1", "kind": "GenerationPool",
        "metadata": {"name": name},
        "spec": {"models": ["tiny-sdxl"], "warm": {"minReplicas": 1, "maxReplicas": 2},
                 "cold": {"maxReplicas": 2},
                 "queue": {"partitions": 2, "tiers": [
                     {"name": "turbo", "weight": 10, "maxWaitSeconds": 10},
                     {"name": "fast", "weight": 5, "maxWaitSeconds": 60},
                     {"name": "relax", "weight": 1, "maxWaitSeconds": 300}]},
                 "gpu": {"count": 0}, "resources": {"cpu": "100m", "memory": "64Mi"},
                 "autoscaling": {"pollSeconds": poll}},
    }


def read_counts(path: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pools", type=int, default=3)
    ap.add_argument("--poll", type=int, default=5, help="autoscaling.pollSeconds of each pool")
    ap.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    ap.add_argument("--settle", type=float, default=15.0)
    ap.add_argument("--operator-src", action="append", default=[],
                    help="folder put first on the operator's PYTHONPATH (another version)")
    ap.add_argument("--label", default="current")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    stack = start_stack()
    kubectl = kubectl_runner(stack)
    apply_crds(kubectl)
    ns = f"bench-api-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    paused = pause_installed_operators(kubectl)
    work = Path(tempfile.mkdtemp(prefix="api-requests-"))
    (work / "sitecustomize.py").write_text(HOOK)
    counts_file = work / "counts.json"
    op = OperatorProcess(stack, watch=ns, extra_env={
        "PYTHONPATH": os.pathsep.join([str(work), *args.operator_src]),
        "IMAGEGEN_BENCH_COUNTS": str(counts_file),
        "IMAGEGEN_MODEL_POLL_SECONDS": "10",  # the default (the tests' fixture uses 2)
        "IMAGEGEN_STALL_SECONDS": "120",
    })
    try:
        kubectl("apply", "-n", ns, "-f", str(ROOT / "manifests/examples/tiny-model.yaml"))
        names = [f"p{i}" for i in range(args.pools)]
        for name in names:
            kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pool(name, args.poll)))
        op.start()

        def ready() -> bool:
            items = json.loads(kubectl("get", "gp", "-n", ns, "-o", "json").stdout)["items"]
            return sum((i.get("status") or {}).get("ready") == "1/1" for i in items) == len(names)
        wait_for(ready, 180, "every pool READY 1/1")
        time.sleep(args.settle)
        before = read_counts(counts_file)
        started = time.monotonic()
        time.sleep(args.seconds)
        after = read_counts(counts_file)
        elapsed = time.monotonic() - started
    finally:
        # While the operator still runs: it removes its finalizers from the pools and the model,
        # so the namespace goes (stopped first, the namespace would hang in Terminating).
        if op.proc is None:
            op.start()
        kubectl("delete", "namespace", ns, "--wait=true", "--timeout=90s", check=False,
                timeout=120)
        op.stop()
        resume_installed_operators(kubectl, paused)

    per_min = 60.0 / elapsed / args.pools
    delta = {k: (after.get(k, 0) - before.get(k, 0)) * per_min for k in after}
    delta = {k: v for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}
    total = sum(delta.values())
    if args.json:
        print(json.dumps({"label": args.label, "pools": args.pools, "poll_seconds": args.poll,
                          "seconds": round(elapsed, 1), "per_pool_per_minute": round(total, 1),
                          "by_request": {k: round(v, 1) for k, v in delta.items()}}))
        return
    print(f"{args.label}: {args.pools} pools at rest, pollSeconds {args.poll}, "
          f"{elapsed:.0f} s window")
    print(f"  API requests per pool per minute: {total:.1f}")
    for key, value in delta.items():
        print(f"    {key:40s} {value:7.1f}")


if __name__ == "__main__":
    main()
