"""Pure presentation helpers for the demo: the results table and a captioned contact sheet."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont


def results_table(results: Sequence[Any]) -> str:
    """One row per result: id, tier, status, cache hit, timings, worker, object key."""
    head = (
        f"{'REQUEST':<30} {'TIER':<6} {'STATUS':<10} {'CACHE':<5} {'QUEUE ms':>9} "
        f"{'GEN ms':>8} {'TOTAL ms':>9}  {'WORKER':<26} OBJECT"
    )
    rows = [head]
    for r in results:
        key = r.images[0].key if r.images else (r.error.message if r.error else "")
        rows.append(
            f"{r.request_id:<30} {r.tier or '-':<6} {r.status:<10} "
            f"{'hit' if r.cache_hit else '-':<5} {r.timings.queue_ms:>9.0f} "
            f"{r.timings.generate_ms:>8.0f} {r.timings.total_ms:>9.0f}  "
            f"{(r.worker or '-'):<26} {key}"
        )
    return "\n".join(rows)


def contact_sheet(paths: Sequence[Path], dest: Path, *, captions: Sequence[str] = (),
                  columns: int = 6, cell: int = 128, width: int = 168) -> Path:
    """Tile images into one PNG, each with its caption printed under it.

    Nearest-neighbour upscaling keeps tiny images crisp; captions are wrapped to the cell's width
    in PIL's default bitmap font (no font files needed).
    """
    if not paths:
        raise ValueError("no images for the contact sheet")
    if captions and len(captions) != len(paths):
        raise ValueError(f"{len(captions)} captions for {len(paths)} images")
    font = ImageFont.load_default()
    line_h = 12
    wrapped = [textwrap.wrap(c, width=width // 6) for c in captions]
    text_h = line_h * max((len(w) for w in wrapped), default=0) + (6 if captions else 0)
    cell_w, cell_h = max(width, cell) if captions else cell, cell + text_h
    rows = (len(paths) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, path in enumerate(paths):
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        with Image.open(path) as img:
            tile = img.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
        sheet.paste(tile, (x + (cell_w - cell) // 2, y))
        for n, line in enumerate(wrapped[i] if captions else []):
            draw.text((x + 4, y + cell + 3 + n * line_h), line, fill="black", font=font)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest)
    return dest
