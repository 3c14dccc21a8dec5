"""The figures table of docs/reliability.md from the JSON rows the chaos suite writes
(tests/chaos/harness.py, one file per scenario under .stack/chaos or $IMAGEGEN_CHAOS_OUT).

    .venv/bin/python bench/chaos_report.py            # markdown table on stdout
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("kill-9", "churn", "scale-down-2", "poison", "process-killer", "minio-stopped",
         "minio-frozen", "redis-stopped", "redis-frozen", "redis-flushall", "kafka-killed")
COLUMNS = ("scenario", "scale", "sent", "answered", "lost", "divergent", "extra msgs (retries)",
           "failed", "refused", "restarts (kills)", "DLQ (why)", "normal req/s", "fault s",
           "during fault", "to 80 % after", "lag after")


def row(fig: dict[str, object]) -> list[str]:
    dlq = fig.get("dlq") or {}
    assert isinstance(dlq, dict)
    statuses = fig.get("statuses") or {}
    assert isinstance(statuses, dict)
    frac = fig.get("outage_fraction")
    rec = fig.get("recovery_s")
    return [
        str(fig["scenario"]), f"{fig['scale']:g}", str(fig["sent"]), str(fig["answered"]),
        str(fig["lost"]),
        str(fig["divergent"]),
        f"{fig['duplicate_messages']} ({fig['client_retries']})" if "client_retries" in fig
        else str(fig["duplicate_messages"]),
        str(fig["failed_ids"]),
        str(sum(n for st, n in statuses.items() if st not in ("succeeded", "failed"))),
        f"{fig['worker_restarts']} ({fig['worker_kills']})",
        ", ".join(f"{n} {code}" for code, n in sorted(dlq.items())) or "0",
        f"{fig['normal_rps']:.1f}",
        f"{fig['fault_s']:.0f}",
        # an instant fault (FLUSHALL) has no "during"
        "-" if frac is None or float(str(fig["fault_s"])) < 1
        else f"{100 * float(str(frac)):.0f} %",
        "not within the run" if rec is None else f"{rec} s",
        "-" if fig["lag_after_drain"] is None else str(fig["lag_after_drain"]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get(
        "IMAGEGEN_CHAOS_OUT", ROOT / ".stack" / "chaos")))
    args = parser.parse_args()
    figs = {p.stem: json.loads(p.read_text()) for p in sorted(args.dir.glob("*.json"))}
    names = [n for n in ORDER if n in figs] + sorted(set(figs) - set(ORDER))
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(COLUMNS))) + "|")
    for name in names:
        print("| " + " | ".join(row(figs[name])) + " |")
    for name in names:
        fig = figs[name]
        print(f"\n{name}: measured {fig.get('measured_at')}, scale {fig.get('scale')}, "
              f"{fig.get('workers')} workers, wall {fig.get('wall_s')} s, statuses "
              f"{fig.get('statuses')}, produce errors {fig.get('produce_errors')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
