"""builtin://shapes-sdxl's parts on the CPU, with no server: the dataset, the pixel reader,
the registry, and a two-step training run (the real recipe takes minutes; the end-to-end test
and bench/shapes_model.py use the real model).

What it fakes: nothing; pictures are drawn by the dataset's own renderer or by hand with numpy.
What it asserts: the reader names background, foreground and shape on synthetic pictures
(including noisy, off-palette and speckled ones) and refuses to name what is far from every
palette colour, so the random tiny-sdxl's output fails the check; the tokenizer gives every
dataset word one token; the dataset is deterministic per seed; an untrained
builtin://shapes-sdxl fails with the command that trains it; a trained one is cached by code
version and loads through the worker's ordinary path.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from imagegen_api.specs import ImageModelSpec
from imagegen_worker.pipelines import (
    ImageJob,
    ModelRunner,
    builtin,
    shapes_data,
    shapes_measure,
    shapes_train,
    sources,
    tokenizer,
)
from PIL import Image


def picture(background: tuple[int, int, int], fill: tuple[int, int, int] | None = None,
            box: tuple[int, int, int, int] = (20, 20, 44, 44)) -> Image.Image:
    px = np.zeros((64, 64, 3), dtype=np.uint8)
    px[:] = background
    if fill is not None:
        y0, x0, y1, x1 = box
        px[y0:y1, x0:x1] = fill
    return Image.fromarray(px)


# --- the dataset ------------------------------------------------------------------------------


def test_palette_colours_are_far_enough_apart_for_the_tolerance() -> None:
    closest = min(np.linalg.norm(np.subtract(a, b))
                  for a, b in itertools.combinations(shapes_data.PALETTE.values(), 2))
    # Within TOLERANCE of one entry means nearer to it than to any other: no close calls.
    assert closest > 2 * shapes_measure.TOLERANCE


def test_captions_name_shape_colour_and_a_different_background() -> None:
    captions = shapes_data.all_captions()
    n = len(shapes_data.PALETTE)
    assert len(captions) == len(set(captions)) == len(shapes_data.SHAPES) * n * (n - 1)
    assert "a red circle on a blue background" in captions
    assert "a red circle on a red background" not in captions


def test_scenes_are_deterministic_per_seed() -> None:
    a, scenes_a = shapes_data.batch(np.random.default_rng(7), 8)
    b, scenes_b = shapes_data.batch(np.random.default_rng(7), 8)
    assert scenes_a == scenes_b
    assert np.array_equal(a, b)
    assert a.shape == (8, 3, 64, 64) and a.min() >= -1.0 and a.max() <= 1.0


def test_every_caption_word_is_one_token() -> None:
    tok = tokenizer.build_tokenizer()
    for word in shapes_data.VOCABULARY:
        assert len(tok(word)["input_ids"]) == 3, word  # start, the word, end
    assert len(tok("a purple triangle on a yellow background")["input_ids"]) == 9


# --- reading pictures back --------------------------------------------------------------------


def test_reader_recovers_every_rendered_scene() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        scene = shapes_data.scene(rng)
        reading = shapes_measure.read(shapes_data.render(scene))
        assert reading.matches(color=scene.color, background=scene.background,
                               shape=scene.shape), (scene, reading)


def test_reader_measures_colours_off_the_palette_and_under_noise() -> None:
    rng = np.random.default_rng(0)
    base = np.asarray(picture((40, 60, 200), (230, 40, 25)), dtype=np.float32)
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    reading = shapes_measure.read(Image.fromarray(noisy))
    assert np.linalg.norm(np.subtract(reading.background, (40, 60, 200))) < 10
    assert reading.foreground is not None
    assert np.linalg.norm(np.subtract(reading.foreground, (230, 40, 25))) < 10
    assert (reading.background_name, reading.foreground_name) == ("blue", "red")
    assert reading.shape == "square"
    assert reading.coverage == pytest.approx(24 * 24 / 64**2, abs=0.02)


def test_background_survives_a_shape_touching_the_border() -> None:
    reading = shapes_measure.read(picture((245, 245, 245), (15, 15, 15), box=(0, 0, 40, 30)))
    assert reading.background_name == "white"
    assert reading.foreground_name == "black"


def test_colours_far_from_every_palette_entry_have_no_name() -> None:
    reading = shapes_measure.read(picture((128, 128, 128), (200, 120, 60)))  # grey, brown
    assert reading.background_name is None
    assert reading.foreground_name is None
    assert not reading.matches(color="red", background="white")


def test_a_plain_picture_has_no_foreground() -> None:
    reading = shapes_measure.read(picture((30, 170, 50)))
    assert reading.background_name == "green"
    assert reading.foreground is None and reading.shape is None
    assert not reading.matches(color="red", background="green")


def test_noise_matches_nothing() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        reading = shapes_measure.read(noise)
        assert reading.background_name is None, reading


def test_the_random_model_fails_the_check_the_trained_one_passes() -> None:
    """builtin://tiny-sdxl, asked what the end-to-end test asks builtin://shapes-sdxl, draws
    pictures that fail it: the check tells a model that follows its prompt from one that does
    not (tests/integration/worker/test_shapes_model.py)."""
    tiny = ModelRunner.load("tiny", ImageModelSpec(source="builtin://tiny-sdxl"))
    scenes = [("circle", "red", "blue"), ("square", "yellow", "purple"),
              ("triangle", "white", "green"), ("circle", "black", "white")]
    jobs = [ImageJob(prompt=shapes_data.caption(*scene), negative_prompt="", width=64,
                     height=64, steps=20, guidance=5.0, sampler="euler", seed=seed)
            for scene in scenes for seed in (11, 22)]
    images = [image for j in jobs for image in tiny.generate([j])]
    matched = [j.prompt for j, image in zip(jobs, images, strict=True)
               if shapes_measure.read(image).matches(color=j.prompt.split()[1],
                                                     background=j.prompt.split()[-2])]
    assert matched == []


@pytest.mark.parametrize(("shape", "expected"), [("square", "square"), ("circle", "circle"),
                                                 ("triangle", "triangle")])
def test_shape_from_how_much_of_its_box_it_fills(shape: str, expected: str) -> None:
    scene = shapes_data.Scene(shape, "yellow", "purple", size=30, cx=32, cy=32)
    assert shapes_measure.read(shapes_data.render(scene)).shape == expected


def test_stray_speckles_do_not_change_the_shape() -> None:
    px = np.asarray(shapes_data.render(
        shapes_data.Scene("circle", "white", "black", size=30, cx=30, cy=30))).copy()
    px[60, 2] = px[2, 60] = (245, 245, 245)  # two lone pixels far from the circle
    assert shapes_measure.read(Image.fromarray(px)).shape == "circle"


# --- the builtin registry ---------------------------------------------------------------------


def test_shapes_folder_is_keyed_by_the_code_version(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path))
    version = builtin.shapes_version()
    assert len(version) == 12 and version == builtin.shapes_version()
    assert builtin.shapes_dir() == tmp_path / "shapes-sdxl" / version


def test_untrained_shapes_model_names_the_command_that_trains_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path))
    with pytest.raises(builtin.BuiltinNotTrained, match=r"python -m imagegen_worker\.pipelines"
                                                        r"\.shapes_train"):
        sources.resolve("builtin://shapes-sdxl")


def test_trained_shapes_model_resolves_to_its_folder(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path))
    folder = builtin.shapes_dir()
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    weights = sources.resolve("builtin://shapes-sdxl")
    assert weights.path == folder
    assert weights.revision == f"builtin:shapes-sdxl:{builtin.shapes_version()}"


def test_training_is_cached_by_version_and_loads_like_any_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A two-step recipe (the real one takes minutes): ensure() trains once, saves a diffusers
    folder with its training record, and the worker loads builtin://shapes-sdxl from it."""
    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path))
    quick = replace(shapes_train.RECIPE, vae_steps=2, vae_batch=2, latent_scenes=16,
                    unet_steps=2, unet_batch=4)
    lines: list[str] = []
    folder = shapes_train.ensure(recipe=quick, log=lines.append)
    assert folder == builtin.shapes_dir() and (folder / "model_index.json").is_file()
    record = json.loads((folder / shapes_train.TRAINING_RECORD).read_text())
    assert record["recipe"]["unet_steps"] == 2 and record["wall_seconds"] > 0
    assert shapes_train.ensure(recipe=quick, log=lines.append) == folder
    assert sum(line.startswith("training builtin://shapes-sdxl") for line in lines) == 1
    assert shapes_train.main(["--check"]) == 0

    runner = ModelRunner.load("shapes", ImageModelSpec(source="builtin://shapes-sdxl"))
    assert runner.revision == f"builtin:shapes-sdxl:{builtin.shapes_version()}"
    vae = runner.pipeline.vae.config
    assert vae.scaling_factor == 1.0 and len(vae.latents_mean) == len(vae.latents_std) == 4
    job = ImageJob(prompt="a red circle on a blue background", negative_prompt="", width=64,
                   height=64, steps=2, guidance=5.0, sampler="euler", seed=1)
    assert runner.generate([job])[0].size == (64, 64)
