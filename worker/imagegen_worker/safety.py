"""Safety after generation (GenerationPool spec.safety.checker): every generated image is scored
by the pool's checker (pipelines/safety_models.py) before it is encoded, watermarked or stored.
A request with an image scored above the threshold is answered `blocked` — the status the
prompt blocklist answers with (validate.py), code `blocked`, here with field `images`, the
checker's reason and score — and none of its images is uploaded or cached.

Loaded once per worker at start, after the models (`app`); run by `batchrun` in the GPU half,
right after the pipeline, on the whole batch at once. A checker that fails fails the batch
(retried like a pipeline failure): an image is never delivered unchecked.

`decide` and `blocked_error` are pure (tests/unit/worker/test_safety.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from imagegen_api.messages import ErrorInfo
from imagegen_api.specs import SafetyCheckerSpec

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Verdict:
    """One image's score from the checker (0..1) and what it saw."""

    score: float
    reason: str


@dataclass(frozen=True)
class Flag:
    """The image that blocks a request: its index among the request's images."""

    index: int
    seed: int
    verdict: Verdict


class Scorer(Protocol):
    revision: str

    def score(self, images: list[Image.Image]) -> Sequence[Verdict]: ...


class SafetyChecker:
    """The pool's checker: a scoring model, its source and the pool's threshold."""

    def __init__(self, spec: SafetyCheckerSpec, scorer: Scorer) -> None:
        self.source = spec.source
        self.threshold = spec.threshold
        self.scorer = scorer

    @property
    def revision(self) -> str:
        return self.scorer.revision

    @classmethod
    def load(cls, spec: SafetyCheckerSpec, *, device: str | None,
             cache_dir: str | os.PathLike[str] | None) -> SafetyChecker:
        from .pipelines.safety_models import load_checker  # torch only when a checker is set

        return cls(spec, load_checker(spec.source, device=device, cache_dir=cache_dir))

    def check(self, images: list[Image.Image]) -> list[Verdict]:
        """One verdict per image, in order (one batched run of the model)."""
        if not images:
            return []
        scores = self.scorer.score(images)
        if len(scores) != len(images):
            raise RuntimeError(f"safety checker returned {len(scores)} scores for "
                               f"{len(images)} images")
        return [Verdict(float(s.score), s.reason) for s in scores]

    def warmup(self) -> None:
        from PIL import Image

        self.check([Image.new("RGB", (64, 64))])


def decide(verdicts: Sequence[Verdict], seeds: Sequence[int], threshold: float) -> Flag | None:
    """The request's highest-scoring image above `threshold`, or None: deliver."""
    worst: Flag | None = None
    for i, (v, seed) in enumerate(zip(verdicts, seeds, strict=True)):
        if v.score > threshold and (worst is None or v.score > worst.verdict.score):
            worst = Flag(i, seed, v)
    return worst


def flagged_count(verdicts: Sequence[Verdict], threshold: float) -> int:
    return sum(1 for v in verdicts if v.score > threshold)


def blocked_error(flag: Flag, *, images: int, flagged: int, threshold: float,
                  source: str) -> ErrorInfo:
    """The error of a result blocked after generation (status `blocked`): the worst of the
    request's `flagged` images (of `images`)."""
    v = flag.verdict
    return ErrorInfo(
        code="blocked",
        message=(f"image {flag.index + 1} of {images} (seed {flag.seed}) was flagged by the "
                 f"pool's safety checker {source}: {v.reason} scored {v.score:.4f}, above the "
                 f"threshold {threshold:g} ({flagged} of {images} flagged); no image of this "
                 f"request was stored"),
        field="images",
        limit=f"safety.checker.threshold={threshold:g}",
        reason=v.reason,
        score=round(v.score, 6),
    )
