"""The figures of one chaos run and the pure arithmetic behind them (no servers, unit-tested in
tests/unit/test_chaos_figures.py): answer rates, recovery time, which ids diverged. The harness
fills a `Figures` row per scenario and saves it as JSON; bench/chaos_report.py makes the table
of docs/reliability.md from those rows."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

FIGURES_DIR = Path(os.environ.get("IMAGEGEN_CHAOS_OUT", Path(__file__).resolve().parents[2]
                                  / ".stack" / "chaos"))
# "Back to full throughput": the first window of this length whose answer rate is at least
# this share of the rate before the fault (80 %: the shared two-core machine is noisy).
RECOVERY_WINDOW_S = 5.0
RECOVERY_SHARE = 0.8

Signature = tuple[object, ...]


def rate(times: Sequence[float], start: float, end: float) -> float:
    """Answers per second in [start, end)."""
    if end <= start:
        return 0.0
    return sum(1 for t in times if start <= t < end) / (end - start)


def recovery_seconds(times: Sequence[float], *, after: float, normal: float, until: float,
                     window: float = RECOVERY_WINDOW_S,
                     share: float = RECOVERY_SHARE) -> float | None:
    """Seconds from `after` to the end of the first `window` at `share` of `normal` or more;
    None when no such window ends by `until`."""
    t = after
    while t + window <= until:
        if rate(times, t, t + window) >= share * normal:
            return round(t + window - after, 1)
        t += 0.5
    return None


def divergent(signatures: Mapping[str, Iterable[Signature]],
              ids: set[str] | None = None) -> dict[str, list[Signature]]:
    """Ids (of `ids`, or all) whose results do not all carry the same signature."""
    out: dict[str, list[Signature]] = {}
    for rid, sigs in signatures.items():
        distinct = set(sigs)
        if (ids is None or rid in ids) and len(distinct) > 1:
            out[rid] = sorted(distinct, key=repr)
    return out


@dataclass
class Figures:
    scenario: str
    scale: float
    workers: int
    sent: int = 0
    answered: int = 0
    lost: int = 0
    divergent: int = 0
    duplicate_messages: int = 0
    client_retries: int = 0  # ids the load deliberately sent again
    statuses: dict[str, int] = field(default_factory=dict)
    failed_ids: int = 0
    worker_restarts: int = 0
    worker_kills: int = 0
    unclean_drains: int = 0
    dlq: dict[str, int] = field(default_factory=dict)
    lag_after_drain: int | None = None
    produce_errors: int = 0
    normal_rps: float = 0.0
    fault_s: float = 0.0
    outage_fraction: float | None = None
    recovery_s: float | None = None
    wall_s: float = 0.0

    def save(self, directory: Path = FIGURES_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.scenario}.json"
        row = {**asdict(self), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path.write_text(json.dumps(row, indent=1) + "\n")
        print(f"chaos figures {self.scenario}: {json.dumps(row)}")  # shown by pytest -rA
        return path
