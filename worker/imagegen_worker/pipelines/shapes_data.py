"""The synthetic scenes `builtin://shapes-sdxl` is trained on: one shape on a plain background.

Pure (numpy + PIL, no torch). `shapes_train` draws its training set from `scene`/`render`;
the demo, the tests and the benchmark use `PALETTE`, `SHAPES` and `caption` to ask for pictures
whose colours `shapes_measure` can check on the pixels.

A scene is one shape (circle, square or triangle) in one named colour on a background of another
named colour, 64x64, captioned "a red circle on a blue background". Colours are far apart in RGB
(no two closer than ~120) so "which named colour is this pixel" is never a close call; the shape
covers 10-35% of the picture so the background is always the dominant colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64

# Named colours and their RGB values: the words a prompt may use and what the pixels must show.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "yellow": (240, 220, 40),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "purple": (140, 40, 180),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Every word a caption can contain (the tokenizer gives each a token of its own).
VOCABULARY: tuple[str, ...] = ("a", "on", "background", *SHAPES, *PALETTE)


@dataclass(frozen=True)
class Scene:
    """What one training picture shows: `size` is the shape's width in pixels, (cx, cy) its
    centre."""

    shape: str
    color: str
    background: str
    size: int
    cx: int
    cy: int

    @property
    def caption(self) -> str:
        return caption(self.shape, self.color, self.background)


def caption(shape: str, color: str, background: str) -> str:
    """The prompt for a scene: "a red circle on a blue background"."""
    return f"a {color} {shape} on a {background} background"


def all_captions() -> list[str]:
    """Every caption of the dataset (shape x colour x a different background colour)."""
    return [caption(s, c, b) for s in SHAPES for c in PALETTE for b in PALETTE if b != c]


def scene(rng: np.random.Generator) -> Scene:
    """A random scene: uniform shape, colour and a different background; size 22-38 px."""
    names = list(PALETTE)
    color, background = (names[i] for i in rng.choice(len(names), size=2, replace=False))
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    size = int(rng.integers(22, 39))
    half = size // 2
    cx, cy = (int(v) for v in rng.integers(half + 2, SIZE - half - 2, size=2))
    return Scene(shape, color, background, size, cx, cy)


def render(s: Scene) -> Image.Image:
    """The scene as a 64x64 RGB picture (drawn at 4x and downsampled: smooth edges)."""
    k = 4
    img = Image.new("RGB", (SIZE * k, SIZE * k), PALETTE[s.background])
    draw = ImageDraw.Draw(img)
    half = s.size * k / 2
    x, y = s.cx * k, s.cy * k
    fill = PALETTE[s.color]
    if s.shape == "circle":
        draw.ellipse((x - half, y - half, x + half, y + half), fill=fill)
    elif s.shape == "square":
        side = half * 0.9  # a square looks bigger than a circle of the same width
        draw.rectangle((x - side, y - side, x + side, y + side), fill=fill)
    else:
        draw.polygon([(x, y - half), (x + half, y + half * 0.8), (x - half, y + half * 0.8)],
                     fill=fill)
    return img.resize((SIZE, SIZE), Image.Resampling.BOX)


def batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[Scene]]:
    """`n` random scenes as float32 pixels in [-1, 1], shape (n, 3, 64, 64), and the scenes."""
    scenes = [scene(rng) for _ in range(n)]
    pixels = np.stack([np.asarray(render(s), dtype=np.float32) for s in scenes])
    return (pixels / 127.5 - 1.0).transpose(0, 3, 1, 2).copy(), scenes
