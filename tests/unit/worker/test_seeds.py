"""Seeds of a request's images: given ones are kept; unseeded ones are derived from the id, so a
regeneration (a retry whose job record was lost) repeats the images and different ids differ."""

from __future__ import annotations

import dataclasses
import hashlib

from imagegen_worker import cachekey
from imagegen_worker.jobs import DERIVED_SEED_BOUND, derived_seed, draw_seeds
from imagegen_worker.validate import ValidRequest

UNSEEDED = ValidRequest(
    request_id="r1", model="tiny", prompt="a fox", negative_prompt="", width=64, height=64,
    steps=4, guidance=5.0, sampler="euler", seed=None, num_images=3, output_format="png",
    tier="fast", submitted_at=None, deadline=None, webhook=None,
)
WHERE = {"namespace": "ns", "pool": "p"}


def test_a_given_seed_is_the_first_image_seed_and_the_next_ones_follow() -> None:
    seeded = dataclasses.replace(UNSEEDED, seed=41)
    assert draw_seeds(seeded, **WHERE) == [41, 42, 43]


def test_an_unseeded_request_gets_the_same_seeds_every_time_it_is_generated() -> None:
    first = draw_seeds(UNSEEDED, **WHERE)
    again = draw_seeds(dataclasses.replace(UNSEEDED), **WHERE)  # a new delivery of the same id
    assert first == again
    base = int.from_bytes(hashlib.sha256(b"ns/p/r1").digest()[:4], "big")
    assert first == [base, base + 1, base + 2]
    assert all(0 <= s < DERIVED_SEED_BOUND + 3 for s in first)


def test_different_ids_pools_or_namespaces_get_different_seeds() -> None:
    ids = {derived_seed("ns", "p", f"r{i}") for i in range(1000)}
    assert len(ids) == 1000
    assert derived_seed("ns", "p", "r1") != derived_seed("ns", "q", "r1")
    assert derived_seed("ns", "p", "r1") != derived_seed("other", "p", "r1")


def test_an_unseeded_request_stays_out_of_the_cache() -> None:
    # Decision (cachekey.py): derived seeds make regeneration repeat the images without the
    # cache, so unseeded requests are neither looked up nor stored.
    assert cachekey.request_keys(UNSEEDED, model_revision="rev") is None
