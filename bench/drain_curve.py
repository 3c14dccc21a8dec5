"""Benchmark (not a test): the drain curve of the issue #5 end-to-end scenario, on the local stack.

Same scenario as tests/e2e/test_autoscaling.py: a pool with the local-runner label (the local
pod runner turns its pods into real worker processes on builtin://tiny-sdxl), warm 1..2,
cold 0..2 (activationLag 3), 4 partitions, pollSeconds 2, targetLagPerWorker 2, scale-down
window 15 s. 160 requests (20 steps, 64x64, run-unique prompts so nothing comes from the
cache) are submitted at once — enough work that the extra workers load the model and help;
the Deployments and the CR status are sampled every second (bench/drain_scenario.run)
until every request is answered and the pool is back at warm 1 / cold 0.

Writes the table (t, lag, warm, cold, answered) to stdout, a markdown table into the
"Drain curve" section of docs/benchmarks.md (between the drain-curve markers; the section is
appended if missing) and a PNG plot (lag on the right axis; warm and cold replicas) to
docs/drain-curve.png.

Usage: .venv/bin/python bench/drain_curve.py [--requests 160] [--use-running-operator]
       [--no-docs]
The stack comes from `dev/stack up` (reused when running) and `dev/stack env --json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(ROOT))

from bench.drain_scenario import DrainRun, pool_manifest, run  # noqa: E402
from bench.plot import line_chart  # noqa: E402
from bench.reaction_time import (  # noqa: E402
    kubectl,
    kubectl_json,
    prepare_namespace,
    stack_env,
    start_operator,
)
from tests.integration.conftest import (  # noqa: E402
    OperatorProcess,
    apply_crds,
    kubectl_runner,
    wait_for,
)

DOC = ROOT / "docs" / "benchmarks.md"
PNG = ROOT / "docs" / "drain-curve.png"
BEGIN, END = "<!-- drain-curve:begin -->", "<!-- drain-curve:end -->"


def text_table(drained: DrainRun) -> str:
    lines = [f"{'t s':>6} {'lag':>4} {'warm':>9} {'cold':>9} {'answered':>8}  reason"]
    for s in drained.samples:
        lines.append(f"{s.t:6.1f} {s.lag if s.lag is not None else '-':>4} "
                     f"{s.warm_replicas:>4}/{s.warm_ready:<4} {s.cold_replicas:>4}/"
                     f"{s.cold_ready:<4} {s.answered:>8}  {s.reason or ''}")
    return "\n".join(lines)


def markdown_table(drained: DrainRun) -> str:
    rows = ["| t (s) | lag | warm (desired/ready) | cold (desired/ready) | answered |",
            "|---:|---:|---:|---:|---:|"]
    for s in drained.samples:
        rows.append(f"| {s.t:.1f} | {s.lag if s.lag is not None else '-'} | "
                    f"{s.warm_replicas}/{s.warm_ready} | {s.cold_replicas}/{s.cold_ready} | "
                    f"{s.answered} |")
    return "\n".join(rows)


def summary(drained: DrainRun) -> str:
    samples = drained.samples
    ok = sum(1 for r in drained.results.values() if r.status == "succeeded")
    peak_lag = max((s.lag or 0 for s in samples), default=0)
    warm_max_at = next((s.t for s in samples if s.warm_replicas == 2), None)
    cold_at = next((s.t for s in samples if s.cold_replicas > 0), None)
    cold_zero_at = next((s.t for s in samples
                         if drained.all_answered_at is not None
                         and s.t >= drained.all_answered_at and s.cold_replicas == 0), None)
    end = samples[-1].t if samples else None
    fmt = (lambda v: "never" if v is None else f"{v:.1f} s")  # noqa: E731
    return (f"{drained.submitted} submitted, {len(drained.results)} answered ({ok} succeeded, "
            f"{drained.duplicates} duplicate results); peak lag {peak_lag}; warm at 2 at "
            f"{fmt(warm_max_at)}, cold woke at {fmt(cold_at)}; all answered at "
            f"{fmt(drained.all_answered_at)}; cold back to 0 at {fmt(cold_zero_at)}; "
            f"warm 1 / cold 0 at {fmt(end)}.")


def update_doc(drained: DrainRun, png: Path) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = "\n".join([
        BEGIN,
        f"Measured {stamp} by `.venv/bin/python bench/drain_curve.py`. {summary(drained)}",
        "",
        f"![drain curve: lag (right axis), warm and cold replicas]({png.name})",
        "",
        markdown_table(drained),
        END,
    ])
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Drain curve\n\n" + block + "\n"
    DOC.write_text(text)


def plot(drained: DrainRun, dest: Path) -> Path:
    xs = [s.t for s in drained.samples]
    return line_chart(
        xs,
        {"lag": [float(s.lag or 0) for s in drained.samples],
         "warm replicas": [float(s.warm_replicas) for s in drained.samples],
         "cold replicas": [float(s.cold_replicas) for s in drained.samples],
         "answered": [float(s.answered) for s in drained.samples]},
        dest,
        title=f"Drain curve: {drained.submitted} requests, warm 1..2, cold 0..2, "
              "4 partitions, down window 15 s",
        right_axis=frozenset({"lag", "answered"}),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--use-running-operator", action="store_true",
                        help="do not start an operator (one must watch the new namespace)")
    parser.add_argument("--no-docs", action="store_true",
                        help="print only; leave docs/benchmarks.md and the PNG alone")
    args = parser.parse_args()

    stack = stack_env()
    apply_crds(kubectl_runner(stack))
    ns = prepare_namespace(stack, "bench-drain")
    op: OperatorProcess | None = None if args.use_running_operator else start_operator(stack, ns)
    pool = "burst"
    try:
        manifest = pool_manifest(pool, "tiny-sdxl", warm_min=1, warm_max=2, cold_max=2,
                                 partitions=4, activation_lag=3, down_window=15, poll=2)
        kubectl(stack, "apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
        wait_for(lambda: kubectl_json(stack, "get", "gp", pool, "-n", ns)
                 .get("status", {}).get("warm", {}).get("ready") == 1, 180,
                 "the first warm worker to load the model", interval=1.0)
        drained = asyncio.run(run(kubectl=stack.kubectl_bin, bootstrap=stack.kafka_bootstrap,
                                  namespace=ns, pool=pool, count=args.requests, steps=20,
                                  settle_warm=1, limit_s=420))
    finally:
        if op is not None:
            op.stop()
        kubectl(stack, "delete", "namespace", ns, "--wait=false", check=False)

    print(text_table(drained))
    print()
    print(summary(drained))
    if not args.no_docs:
        png = plot(drained, PNG)
        update_doc(drained, png)
        print(f"wrote {png.relative_to(ROOT)} and the drain-curve section of "
              f"{DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
