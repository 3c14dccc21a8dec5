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
