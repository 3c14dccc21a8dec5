"""The GPU throughput harness (bench/gpu_throughput.py), run on the CPU with the tiny model.

What it fakes: nothing; it runs the harness in-process with `--tiny` for two steps. What it
asserts: vanilla and worker configurations are measured for every batch size, levers reach the
worker's optimizer, and the JSON results carry what the GPU run's report needs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "gpu_throughput.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_throughput", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tiny_run_measures_vanilla_and_worker_levers(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["--tiny", "--device", "cpu", "--steps", "2", "--batches", "1,2", "--repeats", "1",
            "--levers", "none", "--levers", "channels_last,fuse_qkv", "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "tiny-sdxl" and result["steps"] == 2
    rows = {(r["config"], r["batch"]): r for r in result["rows"]}
    configs = ["vanilla (eager, defaults)", "worker none", "worker channels_last,fuse_qkv"]
    assert set(rows) == {(c, b) for c in configs for b in (1, 2)}
    for (config, _), row in rows.items():
        assert row["error"] is None and row["s_per_image"] > 0 and row["first_call_s"] > 0
        assert (row["speedup_vs_vanilla"] is None) == config.startswith("vanilla")
    applied = result["configs"]["worker channels_last,fuse_qkv"]["applied"]
    assert applied == ["sdpa", "channels_last", "fuse_qkv"]
    assert "s/image" in capsys.readouterr().out

    # a later run (the compiled one on a GPU) takes its speed-ups from this run's vanilla rows
    later = tmp_path / "later.json"
    again = [*argv[:11], "--no-vanilla", "--baseline", str(out), "--out", str(later)]
    assert bench.main(again) == 0
    rows = json.loads(later.read_text())["rows"]
    assert [r["config"] for r in rows] == ["worker none"] * 2
    assert all(r["speedup_vs_vanilla"] > 0 for r in rows)


def test_flop_floor_matches_the_anchor(bench: ModuleType) -> None:
    assert bench.flop_floor_s(1024, 30, 7.0) == pytest.approx(0.52, abs=0.005)
    assert bench.flop_floor_s(512, 30, 7.0) == pytest.approx(0.52 / 4, abs=0.005)


def test_levers_are_checked(bench: ModuleType) -> None:
    assert bench.parse_levers("compile, bf16") == ("bf16", "compile")
    assert bench.parse_levers("none") == ()
    with pytest.raises(Exception, match="unknown levers"):
        bench.parse_levers("turbo")


def test_full_model_refuses_to_run_on_a_cpu(bench: ModuleType) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu"])
