"""Several engines read the page, a character-level majority vote writes it (ROVER).

The first voter is the backbone: its lines, boxes and reading order are the answer's.
Every other voter's lines are paired with the backbone line they share a band with and
aligned to it character by character (Levenshtein); where two other voters agree on
something the backbone does not say (another character, a deletion, an insertion), the
vote goes to them. No weights, thresholds or confidences calibrated on a page: with
three voters it is a plain majority.

Measured on the real Fraktur page of tests/fixtures/real: tesseract Fraktur 0.098,
rapidocr 0.101, tesseract frk 0.109 on their own; the vote of the three 0.077 (docs/
benchmarks.md). The voters run concurrently; the page costs about the slowest of them.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import numpy as np

from deployments.engines.ocr.base import OcrEngine
from deployments.engines.ocr.rapidocr import RapidOcrEngine
from deployments.engines.ocr.tesseract import TesseractEngine
from deployments.models import ModelSpec
from serve_app.kernel.errors import InvalidInput
from serve_app.kernel.pages import Box, Line, Word
from serve_app.kernel.settings import Settings

VOTER_ENGINES: dict[str, type[OcrEngine]] = {
    engine.name: engine for engine in (TesseractEngine, RapidOcrEngine)}
# The default voters: the three best single readers of German Fraktur print.
DEFAULT_VOTERS = ({"engine": "tesseract", "languages": ["fraktur"]},
                  {"engine": "tesseract", "languages": ["frk"]},
                  {"engine": "rapidocr"})


class EnsembleEngine:
    """A majority vote of several engines' readings, the first voter's geometry."""

    name: ClassVar[str] = "ensemble"
    reads_baselines: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        self.voters: list[tuple[OcrEngine, dict[str, Any]]] = []
        built: dict[str, OcrEngine] = {}  # one engine object per engine, however many votes
        for voter in spec.options.get("voters", DEFAULT_VOTERS):
            engine = voter["engine"]
            if engine not in VOTER_ENGINES:
                raise ValueError(f"ensemble voter {engine!r}: one of {sorted(VOTER_ENGINES)}")
            if engine not in built:
                built[engine] = VOTER_ENGINES[engine](
                    spec.model_copy(update={"engine": engine, "options": {}}), settings,
                    device)
            self.voters.append((built[engine], {"languages": voter.get("languages", [])}))
        if len(self.voters) != 3:
            raise ValueError("an ensemble votes with exactly three voters (a majority of two)")

    def move(self, device: str) -> None:
        for engine in {id(engine): engine for engine, _ in self.voters}.values():
            engine.move(device)

    async def recognize(self, image: np.ndarray, options: dict[str, Any]) -> list[Line]:
        if options.get("languages"):
            raise InvalidInput("engine ensemble reads with its own voters' languages; "
                               "send no languages, or name a single engine",
                               {"field": "languages"})
        readings = await asyncio.gather(*(
            engine.recognize(image, {**options, **voter_options})
            for engine, voter_options in self.voters))
        return combine(readings[0], readings[1:])


def combine(backbone: list[Line], others: list[list[Line]]) -> list[Line]:
    """The backbone's lines with their text voted on by the other readings."""
    paired = [pair_lines(backbone, other) for other in others]
    lines = []
    for index, line in enumerate(backbone):
        texts = [texts[index] for texts in paired]
        if not all(texts):  # a voter saw nothing on this line: no majority without it
            lines.append(line)
            continue
        text = vote(line["text"], texts[0], texts[1])
        lines.append(with_text(line, text))
    return lines


def pair_lines(backbone: list[Line], other: list[Line]) -> list[str]:
    """For each backbone line, the text of the other reading's lines that lie mostly in
    its band, left to right ("" where none does)."""
    found: list[list[Line]] = [[] for _ in backbone]
    for line in other:
        overlaps = [band_overlap(own["bbox"], line["bbox"]) for own in backbone]
        best = max(range(len(backbone)), key=overlaps.__getitem__, default=None)
        if best is not None and overlaps[best] > 0.5:
            found[best].append(line)
    return [" ".join(line["text"] for line in sorted(lines, key=lambda line: line["bbox"][0]))
            for lines in found]


def band_overlap(a: Box, b: Box) -> float:
    """How much of the lower of two boxes their vertical extents share."""
    shared = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, shared) / max(1.0, min(a[3] - a[1], b[3] - b[1]))


def align(backbone: str, other: str) -> tuple[list[str], list[str]]:
    """The other text aligned to the backbone's characters by edit distance: what it has
    at each backbone character ("" for a deletion), and what it inserts before each
    character and at the end."""
    rows, cols = len(backbone), len(other)
    cost = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(rows + 1):
        cost[i][0] = i
    for j in range(cols + 1):
        cost[0][j] = j
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1,
                             cost[i - 1][j - 1] + (backbone[i - 1] != other[j - 1]))
    at, before = [""] * rows, [""] * (rows + 1)
    i, j = rows, cols
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (backbone[i - 1] != other[j - 1]):
            at[i - 1] = other[j - 1]
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            before[i] = other[j - 1] + before[i]
            j -= 1
    return at, before


def vote(backbone: str, first: str, second: str) -> str:
    """The backbone text, overruled wherever the two others agree against it."""
    at_1, before_1 = align(backbone, first)
    at_2, before_2 = align(backbone, second)
    out = []
    for i in range(len(backbone) + 1):
        if before_1[i] and before_1[i] == before_2[i]:
            out.append(before_1[i])
        if i < len(backbone):
            agreed = at_1[i] == at_2[i] and at_1[i] != backbone[i]
            out.append(at_1[i] if agreed else backbone[i])
    return "".join(out)


def with_text(line: Line, text: str) -> Line:
    """The line with the voted text; its word boxes kept where the words still match
    them one to one, dropped where the vote merged or split words."""
    voted = Line(**line)  # type: ignore[typeddict-item]
    voted["text"] = text
    words = line.get("words")
    if words:
        tokens = text.split()
        voted["words"] = ([Word(**{**word, "text": token})  # type: ignore[typeddict-item]
                           for word, token in zip(words, tokens, strict=True)]
                          if len(tokens) == len(words) else None)
    return voted
