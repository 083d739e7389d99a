"""Where a forward's texts go when they are laid end to end in rows (packing.py, exported.py).

Torch-free, so a dense model started from its ONNX export (exported.py) packs its rows
without importing torch, and the same plan serves the torch encoders (packing.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PACK_WIDTH = 32
# Architectures whose embeddings take explicit position ids from 0 (BERT) or from just
# past the padding index (RoBERTa, XLM-R: BGE-M3, the rerankers), and whose attention
# takes a [rows, width, width] mask.
POSITIONS_AFTER_PADDING = frozenset({"roberta", "xlm-roberta"})
PACKABLE = frozenset({"bert"}) | POSITIONS_AFTER_PADDING


def first_position_of(config: Any) -> int:
    """The position id of a text's first token: 0 (BERT), or just past the padding index
    (RoBERTa, XLM-R)."""
    return config.pad_token_id + 1 if config.model_type in POSITIONS_AFTER_PADDING else 0


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Text indices by row: longest first, each into the first row with room for it
    (first-fit decreasing). A text longer than `width` gets a row of its own."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        length = lengths[index]
        for row, free in enumerate(room):
            if free >= length:
                rows[row].append(index)
                room[row] -= length
                break
        else:
            rows.append([index])
            room.append(width - length)
    return rows


@dataclass(frozen=True)
class PackedRows:
    """A forward's texts laid end to end in `rows` rows of `width` cells.

    Their tokens are laid in the order of `order` (text indices); in that order `sizes`
    are the texts' lengths and `starts` where each begins among all tokens so laid. For
    each token so laid, `step` is its place in its text and `cells` its cell in the rows
    (row-major)."""

    rows: int
    width: int
    order: np.ndarray
    sizes: np.ndarray
    starts: np.ndarray
    step: np.ndarray
    cells: np.ndarray

    @classmethod
    def of(cls, lengths: Sequence[int], width: int = PACK_WIDTH) -> PackedRows:
        """Rows at least `width` wide (and as wide as the longest text), as pack_rows
        fills them; then only as wide as the fullest row."""
        rows = pack_rows(lengths, max([width, *lengths]))
        order = np.array([index for row in rows for index in row], dtype=np.int64)
        row_of = np.repeat(np.arange(len(rows)), [len(row) for row in rows])
        sizes = np.asarray(lengths, dtype=np.int64)[order]
        starts = np.cumsum(sizes) - sizes
        row_starts = starts[np.searchsorted(row_of, np.arange(len(rows)))]
        offset_in_row = starts - row_starts[row_of]
        used = int((offset_in_row + sizes).max(initial=1))
        step = np.arange(int(sizes.sum())) - np.repeat(starts, sizes)
        cells = np.repeat(row_of * used + offset_in_row, sizes) + step
        return cls(len(rows), used, order, sizes, starts, step, cells)

    def segments(self) -> np.ndarray:
        """[rows, width]: each cell's text (its index in the forward), -1 where none."""
        segment = np.full(self.rows * self.width, -1, dtype=np.int64)
        segment[self.cells] = np.repeat(self.order, self.sizes)
        return segment.reshape(self.rows, self.width)

    def positions(self, first_position: int) -> np.ndarray:
        """[rows, width]: each token's position id in its own text; 0 where no token."""
        positions = np.zeros(self.rows * self.width, dtype=np.int64)
        positions[self.cells] = self.step + first_position
        return positions.reshape(self.rows, self.width)
