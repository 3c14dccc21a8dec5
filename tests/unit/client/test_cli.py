"""The `imagegen` CLI's pure parts: the requests it builds, the table and the progress line."""

from __future__ import annotations

import argparse
import io

import pytest
from imagegen_api.messages import ErrorInfo, GenerationRequest, GenerationResult, ImageRef, Timings
from imagegen_client import cli


def ns(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = dict(
        prompts=["a fox", "a cat"], count=None, tier="fast", size=None, seed=None, steps=None,
        guidance=None, sampler=None, negative=None, model=None, images=1, format="png", lora=None,
        quality=None, init_image=None, mask=None, strength=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_one_request_per_prompt_by_default() -> None:
    reqs = cli.build_requests(ns())
    assert [r.prompt for r in reqs] == ["a fox", "a cat"]
    assert all(r.tier == "fast" and r.seed is None for r in reqs)
    assert len({r.request_id for r in reqs}) == 2


def test_count_cycles_prompts_and_tiers_and_numbers_seeds() -> None:
    reqs = cli.build_requests(ns(count=5, tier="turbo,relax", seed=10, size="64x128", steps=4))
    assert [r.prompt for r in reqs] == ["a fox", "a cat", "a fox", "a cat", "a fox"]
    assert [r.tier for r in reqs] == ["turbo", "relax", "turbo", "relax", "turbo"]
    assert [r.seed for r in reqs] == [10, 11, 12, 13, 14]
    assert {(r.width, r.height, r.steps) for r in reqs} == {(64, 128, 4)}


def test_square_size_shorthand() -> None:
    [req, _] = cli.build_requests(ns(size="96"))
    assert (req.width, req.height) == (96, 96)


def test_table_lists_every_request_including_timeouts() -> None:
    ok = GenerationRequest(request_id="r1", prompt="p", tier="fast")
    bad = GenerationRequest(request_id="r2", prompt="p", tier="relax")
    lost = GenerationRequest(request_id="r3", prompt="p", tier="turbo")
    results = {
        "r1": GenerationResult(
            request_id="r1", status="succeeded", cache_hit=True, tier="fast", worker="w-0",
            images=[ImageRef(key="ns/p/abc.png", url="u", width=64, height=64, seed=1,
                             sha256="abc")],
            timings=Timings(queue_ms=12.4, generate_ms=0, total_ms=15.2)),
        "r2": GenerationResult(request_id="r2", status="rejected", tier="relax",
                               error=ErrorInfo(code="limit_exceeded", message="m")),
    }
    lines = cli.table([ok, bad, lost], results).splitlines()
    assert lines[0].split() == ["REQUEST", "TIER", "STATUS", "CACHE", "QUEUE_MS", "GEN_MS",
                                "TOTAL_MS", "WORKER", "OBJECT"]
    assert lines[1].split() == ["r1", "fast", "succeeded", "hit", "12", "0", "15", "w-0",
                                "ns/p/abc.png"]
    assert lines[2].split()[:3] == ["r2", "relax", "rejected"] and "limit_exceeded" in lines[2]
    assert lines[3].split() == ["r3", "turbo", "timeout"]


def test_progress_line_counts_done_cached_and_failed() -> None:
    out = io.StringIO()
    bar = cli.ProgressBar(4, stream=out)
    results = {
        "a": GenerationResult(request_id="a", status="succeeded", cache_hit=True),
        "b": GenerationResult(request_id="b", status="failed"),
    }
    line = bar.line(results)
    assert line.startswith("[" + "#" * 15 + "." * 15 + "] 2/4 done, 1 cached, 1 not succeeded")
    bar.update(results)
    assert out.getvalue() == ""  # not a terminal: no redraws
    bar.finish(results)
    assert out.getvalue().startswith("[###")


def test_choices_and_limits_come_from_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    """Samplers, output formats and the guidance range are stated once, in imagegen_api.specs."""
    from imagegen_api.specs import GUIDANCE_RANGE, OUTPUT_FORMATS, SAMPLERS, GenerationDefaults

    assert SAMPLERS == ("euler", "euler_a", "ddim", "dpmpp_2m", "lcm", "heun")
    assert OUTPUT_FORMATS == ("png", "webp", "jpeg")
    schema = GenerationDefaults.model_json_schema()["properties"]
    assert (schema["guidance"]["minimum"], schema["guidance"]["maximum"]) == GUIDANCE_RANGE
    assert tuple(schema["sampler"]["enum"]) == SAMPLERS
    for bad, needle in ((["--sampler", "nope"], "invalid choice"),
                        (["--format", "gif"], "invalid choice"),
                        (["--guidance", "50.5"], "guidance 50.5 is outside [0, 50]"),
                        (["--size", "64by64"], "size '64by64' is not WIDTHxHEIGHT")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["submit", "--pool", "p", *bad, "a fox"])
        assert exit_info.value.code == 2
        assert needle in capsys.readouterr().err
