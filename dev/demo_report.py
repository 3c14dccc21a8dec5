"""Pure presentation helpers for the demo: the results table and a contact sheet of images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image


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


def contact_sheet(paths: Sequence[Path], dest: Path, *, columns: int = 6, cell: int = 128) -> Path:
    """Tile images into one PNG (nearest-neighbour upscaling keeps tiny images crisp)."""
    if not paths:
        raise ValueError("no images for the contact sheet")
    rows = (len(paths) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell, rows * cell), "white")
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            tile = img.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
        sheet.paste(tile, ((i % columns) * cell, (i // columns) * cell))
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest)
    return dest
