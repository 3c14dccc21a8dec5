"""The README's promises hold: its two commands exist and CI runs one; its links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
# [text](target) with a relative target: not a URL scheme, not an in-page anchor, not absolute.
LINK = re.compile(r"\]\((?!#|[a-zA-Z][a-zA-Z0-9+.-]*:|/)([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _readme() -> str:
    return README.read_text()


def _commands() -> list[str]:
    """First word pairs of every line inside the README's fenced code blocks."""
    out = []
    for block in FENCE.findall(_readme()):
        for line in block.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 2:
                out.append(" ".join(words[:2]))
    return out


def _targets(text: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE))


@pytest.mark.parametrize("command", ["make demo", "make test"])
def test_readme_commands_are_make_targets(command: str) -> None:
    assert command in _commands(), f"README.md shows no `{command}` in a code block"
    target = command.split()[1]
    assert target in _targets((ROOT / "Makefile").read_text()), f"Makefile has no {target}:"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    lines = [line.split("#", 1)[0] for line in ci.splitlines()]
    assert any(re.search(r"(^|\s)make\s+test(\s|$)", line) for line in lines)


def test_relative_links_resolve() -> None:
    text = FENCE.sub("", _readme())  # code blocks hold no links
    targets = sorted(set(LINK.findall(text)))
    missing = [t for t in targets if not (ROOT / t.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def _layout_paths() -> list[str]:
    """Paths that start the lines of the README's Layout block (`a/  b/  c/` counts three)."""
    section = _readme().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    block = FENCE.findall(section)[0]
    paths: list[str] = []
    for line in block.splitlines():
        if line[:1].isspace():
            continue  # a description's continuation
        words = line.split()
        while words and "/" in words[0]:
            paths.append(words.pop(0).rstrip("/"))
    return paths


def test_layout_names_existing_paths_and_every_top_level_folder() -> None:
    paths = _layout_paths()
    assert paths, "README.md has a Layout block"
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README's Layout names paths that do not exist: {missing}"
    named_tops = {p.split("/", 1)[0] for p in paths}
    # Top-level folders of the checkout (not local state: hidden, build outputs, out/).
    tops = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
            and p.name not in {"out", "build", "dist", "__pycache__"}
            and not p.name.endswith(".egg-info")}
    assert tops <= named_tops, f"README's Layout misses {sorted(tops - named_tops)}"
    # Every Python package of the distribution is named with its folder.
    for package in sorted(ROOT.glob("*/imagegen_*/__init__.py")):
        rel = package.parent.relative_to(ROOT).as_posix()
        assert rel in paths, f"README's Layout misses the package {rel}/"
