"""A dependency-free line chart (Pillow) for benchmark timelines: the drain curve of the
autoscaling scenario (queue lag, warm and cold replicas over time)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd")


def line_chart(
    xs: Sequence[float],
    series: Mapping[str, Sequence[float]],
    dest: Path,
    *,
    title: str,
    x_label: str = "seconds",
    right_axis: frozenset[str] = frozenset(),
    size: tuple[int, int] = (900, 420),
) -> Path:
    """Plot each series against xs; series named in right_axis use their own scale (right)."""
    w, h = size
    left, right, top, bottom = 60, 60, 40, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.text((left, 12), title, fill="black")
    x_max = max(xs) if xs else 1.0
    left_max = max([max(v, default=0) for k, v in series.items() if k not in right_axis] or [1])
    right_max = max([max(v, default=0) for k, v in series.items() if k in right_axis] or [1])
    left_max, right_max = max(left_max, 1), max(right_max, 1)

    def px(x: float, y: float, y_max: float) -> tuple[float, float]:
        return (left + (w - left - right) * x / max(x_max, 1e-9),
                h - bottom - (h - top - bottom) * y / y_max)

    d.rectangle([left, top, w - right, h - bottom], outline="#888")
    for i in range(5):  # grid + tick labels
        y = top + (h - top - bottom) * i / 4
        d.line([left, y, w - right, y], fill="#eee")
        d.text((8, y - 6), f"{left_max * (4 - i) / 4:g}", fill="black")
        if right_axis:
            d.text((w - right + 6, y - 6), f"{right_max * (4 - i) / 4:.0f}", fill="black")
        x = left + (w - left - right) * i / 4
        d.text((x - 10, h - bottom + 6), f"{x_max * i / 4:.0f}", fill="black")
    d.text((w // 2 - 20, h - 22), x_label, fill="black")
    for n, (name, ys) in enumerate(series.items()):
        color = COLORS[n % len(COLORS)]
        y_max = right_max if name in right_axis else left_max
        points = [px(x, y, y_max) for x, y in zip(xs, ys, strict=False)]
        if len(points) > 1:
            d.line(points, fill=color, width=2)
        label = f"{name} (right)" if name in right_axis else name
        d.text((left + 10 + 150 * n, top + 6), label, fill=color)
    dest.parent.mkdir(parents=True, exist_ok=True)
    img.save(dest)
    return dest
