"""Write one benchmark's section of docs/benchmarks.md, between its markers."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_report(markdown: str, marker: str) -> None:
    target = ROOT / "docs" / "benchmarks.md"
    text = target.read_text(encoding="utf-8") if target.exists() else "# Benchmarks\n"
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    block = f"{start}\n{markdown}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text,
                      flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    target.write_text(text, encoding="utf-8")


def line_chart(series: dict[str, list[tuple[float, float]]], target: Path, title: str,
               x_label: str, y_label: str) -> None:
    """A PNG of a few lines (points joined, labelled in a legend), x on a log2 scale when
    every x is a power of two (concurrency levels); drawn with PIL, no plotting library."""
    import math

    from PIL import Image, ImageDraw

    width, height, left, top, bottom, right = 900, 420, 80, 40, 60, 190
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    xs = sorted({x for points in series.values() for x, _ in points})
    log = all(x > 0 and math.log2(x).is_integer() for x in xs)
    scale = (lambda v: math.log2(v)) if log else (lambda v: v)
    lo, hi = scale(xs[0]), scale(xs[-1]) if len(xs) > 1 else scale(xs[0]) + 1
    top_y = max(y for points in series.values() for _, y in points) * 1.1 or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (scale(x) - lo) / (hi - lo) * plot_w, top + plot_h - y / top_y * plot_h)

    colors = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    for index, (name, points) in enumerate(series.items()):
        color = colors[index % len(colors)]
        joined = [at(x, y) for x, y in sorted(points)]
        if len(joined) > 1:
            draw.line(joined, fill=color, width=3)
        for px, py in joined:
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=color)
        draw.rectangle([width - right + 15, top + 20 * index, width - right + 30,
                        top + 20 * index + 12], fill=color)
        draw.text((width - right + 36, top + 20 * index), name, fill="black")
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for x in xs:
        px, _ = at(x, 0)
        draw.text((px - 8, top + plot_h + 6), f"{x:g}", fill="black")
    for step in range(6):
        value = top_y * step / 5
        _, py = at(xs[0], value)
        draw.text((8, py - 6), f"{value:.0f}", fill="black")
    draw.text((left, 10), title, fill="black")
    draw.text((left + plot_w // 2 - 40, height - 24), x_label, fill="black")
    draw.text((8, top - 24), y_label, fill="black")
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)


def bar_chart(bars: dict[str, float], target: Path, title: str, goal: float,
              labels: dict[str, str] | None = None) -> None:
    """A PNG of horizontal bars (a ratio each, written beside it, or its label), with a
    dashed line at `goal`: which rows meet their target shows at a glance; drawn with PIL
    like line_chart."""
    from PIL import Image, ImageDraw

    width, left, right, row, top = 900, 300, 40, 34, 40
    height = top + row * len(bars) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    top_x = max([*bars.values(), goal]) * 1.15
    plot_w = width - left - right

    def x_at(value: float) -> float:
        return left + value / top_x * plot_w

    for index, (name, value) in enumerate(bars.items()):
        y = top + index * row
        color = (44, 160, 44) if value >= goal else (214, 39, 40)
        draw.rectangle([left, y + 6, x_at(value), y + row - 6], fill=color)
        draw.text((8, y + 10), name, fill="black")
        draw.text((x_at(value) + 6, y + 10), (labels or {}).get(name, f"{value:.2f}"),
                  fill="black")
    goal_x = x_at(goal)
    for y in range(top, top + row * len(bars), 8):
        draw.line([goal_x, y, goal_x, y + 4], fill="black", width=2)
    draw.text((goal_x - 30, top + row * len(bars) + 8), f"target {goal:g}", fill="black")
    draw.text((left, 10), title, fill="black")
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)
