"""Read a shapes picture back from its pixels: background colour, foreground colour, shape.

Pure (numpy + PIL). Used by the end-to-end test, the benchmark and the demo to check that a
generated image shows what its prompt asked for, with no model in the loop:

- background: the per-channel median of the outer ring of pixels (the shape rarely touches
  the border, and a median ignores it where it does);
- foreground: the per-channel median of the pixels far from the background colour (more than
  `FOREGROUND_DISTANCE`), so anti-aliased edges and noise near the background do not count;
- a colour is named by the nearest `PALETTE` entry, and only when it lies within `TOLERANCE` of
  it. The palette's colours are at least ~120 apart in RGB, so within 60 of an entry a colour is
  unambiguously that one; farther, it is "no named colour" (noise, a blend, a random model);
- shape: how much of its bounding box the foreground fills (square ~1, circle ~pi/4, triangle
  ~1/2), with cut-offs halfway between.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .shapes_data import PALETTE

TOLERANCE = 60.0
FOREGROUND_DISTANCE = 80.0
MIN_FOREGROUND = 0.02  # a shape covers at least this fraction of the picture to count
RING = 3  # pixels of the border that sample the background

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Reading:
    """What the pixels show; names are None when no palette colour is within the tolerance."""

    background: RGB
    foreground: RGB | None
    coverage: float  # fraction of pixels counted as foreground
    background_name: str | None
    foreground_name: str | None
    shape: str | None

    def matches(self, *, color: str, background: str, shape: str | None = None) -> bool:
        """True when the named colours (and the shape, if given) are the ones asked for."""
        ok = self.foreground_name == color and self.background_name == background
        return ok and (shape is None or self.shape == shape)


def pixels(image: Image.Image) -> np.ndarray:
    """The image as float RGB, shape (h, w, 3)."""
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def background_color(px: np.ndarray) -> RGB:
    """Median colour of the outer `RING` pixels."""
    ring = np.concatenate([px[:RING].reshape(-1, 3), px[-RING:].reshape(-1, 3),
                           px[RING:-RING, :RING].reshape(-1, 3),
                           px[RING:-RING, -RING:].reshape(-1, 3)])
    return _rgb(np.median(ring, axis=0))


def foreground_mask(px: np.ndarray, background: RGB) -> np.ndarray:
    """Pixels farther than FOREGROUND_DISTANCE from the background colour."""
    distance = np.linalg.norm(px - np.asarray(background, dtype=np.float32), axis=-1)
    mask: np.ndarray = distance > FOREGROUND_DISTANCE
    return mask


def name_of(rgb: RGB | None) -> str | None:
    """The palette colour nearest to `rgb`, if it is within TOLERANCE."""
    if rgb is None:
        return None
    distances = {n: float(np.linalg.norm(np.subtract(rgb, ref))) for n, ref in PALETTE.items()}
    nearest = min(distances, key=distances.__getitem__)
    return nearest if distances[nearest] <= TOLERANCE else None


def shape_of(mask: np.ndarray) -> str | None:
    """circle, square or triangle from how much of its bounding box the mask fills."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = len(ys) / box
    if fill > 0.89:  # between a square (1.0) and a circle (0.785)
        return "square"
    if fill > 0.64:  # between a circle and a triangle (0.5)
        return "circle"
    return "triangle"


def read(image: Image.Image) -> Reading:
    """Background, foreground and shape of a picture."""
    px = pixels(image)
    background = background_color(px)
    mask = foreground_mask(px, background)
    coverage = float(mask.mean())
    foreground = _rgb(np.median(px[mask], axis=0)) if coverage >= MIN_FOREGROUND else None
    shape = shape_of(_largest_blob(mask)) if foreground is not None else None
    return Reading(background, foreground, coverage, name_of(background), name_of(foreground),
                   shape)


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of the mask (stray speckles do not widen the box)."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, current = 0, 0, 0
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if labels[y0, x0]:
            continue
        current += 1
        labels[y0, x0] = current
        stack, size = [(y0, x0)], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    blob: np.ndarray = labels == best
    return blob


def _rgb(values: np.ndarray) -> RGB:
    r, g, b = (round(float(v)) for v in values)
    return (r, g, b)
