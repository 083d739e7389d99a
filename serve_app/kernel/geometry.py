"""Shared by every engine: the box around a polygon, a score as a confidence."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Box = tuple[float, float, float, float]


def bbox_of(points: Iterable[Sequence[float]]) -> Box:
    """x0, y0, x1, y1 around the points; an empty polygon is the zero box."""
    listed = [(float(p[0]), float(p[1])) for p in points] or [(0.0, 0.0)]
    xs, ys = [x for x, _ in listed], [y for _, y in listed]
    return min(xs), min(ys), max(xs), max(ys)


def confidence(score: float | None) -> float:
    """An engine's score clamped to [0, 1] and rounded as the API reports it."""
    return round(min(max(float(score or 0.0), 0.0), 1.0), 4)
