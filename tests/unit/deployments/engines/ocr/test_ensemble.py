"""The ensemble's vote: two readings that agree overrule the backbone, one never does."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import numpy as np
import pytest

from deployments.engines.ocr import ensemble
from deployments.engines.ocr.ensemble import EnsembleEngine, align, combine, pair_lines, vote
from deployments.models import ModelSpec
from serve_app.kernel.errors import InvalidInput
from serve_app.kernel.pages import Line, Word
from serve_app.kernel.settings import Settings


def line(text: str, top: float, left: float = 0.0, words: bool = False) -> Line:
    found = Line(text=text, bbox=(left, top, left + 10 * len(text), top + 30), polygon=None,
                 confidence=0.9)
    if words:
        found["words"] = [Word(text=word, bbox=(i * 50.0, top, i * 50.0 + 40, top + 30),
                               confidence=0.9) for i, word in enumerate(text.split())]
    return found


def rebuilt(at: list[str], before: list[str]) -> str:
    return "".join(b + a for b, a in zip(before, [*at, ""], strict=True))


def test_alignment_names_substitutions_deletions_and_insertions() -> None:
    for backbone, other in [("Vernunft", "Vernunfft"), ("Muth", "Mut"), ("ſich", "sich"),
                            ("", "Kant"), ("Kant", "")]:
        at, before = align(backbone, other)
        assert rebuilt(at, before) == other
        assert len(at) == len(backbone)
    assert align("abc", "ac") == (["a", "", "c"], ["", "", "", ""])
    assert align("ac", "abc") == (["a", "c"], ["", "b", ""])


def test_two_voters_that_agree_overrule_the_backbone() -> None:
    assert vote("Aufklarung", "Aufklärung", "Aufklärung") == "Aufklärung"  # substitution
    assert vote("deer Menſch", "der Menſch", "der Menſch") == "der Menſch"  # deletion
    assert vote("Menſh", "Menſch", "Menſch") == "Menſch"  # insertion
    assert vote("Menſch", "Menſch", "Menſch") == "Menſch"


def test_one_voter_alone_never_overrules_the_backbone() -> None:
    assert vote("ſelbſt", "selbst", "ſelbſt") == "ſelbſt"
    assert vote("ſelbſt", "selbst", "felbft") == "ſelbſt"  # two others disagree with each other


def test_lines_are_paired_by_their_band_and_read_left_to_right() -> None:
    backbone = [line("erste Zeile", 0), line("zweite Zeile", 100)]
    other = [line("Zeile", 102, left=200), line("zweite", 98), line("erste Zeile", 4),
             line("Rand", 400)]
    assert pair_lines(backbone, other) == ["erste Zeile", "zweite Zeile"]


def test_a_line_a_voter_did_not_see_keeps_the_backbone_text() -> None:
    backbone = [line("Ausgang", 0), line("Unmündigkeit", 100)]
    others = [[line("Ausgang", 0), line("Unmundigkeit", 100)], [line("Ausgang", 0)]]
    assert [found["text"] for found in combine(backbone, others)] == ["Ausgang",
                                                                       "Unmündigkeit"]


def test_word_boxes_follow_the_vote_only_where_words_still_match_one_to_one() -> None:
    backbone = [line("Habe Muth", 0, words=True), line("ſich de ines", 100, words=True)]
    others = [[line("Habe Mut", 0), line("ſich deines", 100)],
              [line("Habe Mut", 0), line("ſich deines", 100)]]
    kept, merged = combine(backbone, others)
    assert [word["text"] for word in kept["words"] or []] == ["Habe", "Mut"]
    assert kept["words"][0]["bbox"] == backbone[0]["words"][0]["bbox"]  # type: ignore[index]
    assert merged["text"] == "ſich deines" and merged["words"] is None


class Reader:
    """A voter engine that answers with fixed lines and records what it was asked."""

    name = "reader"
    reads_baselines = False
    built: ClassVar[list[Reader]] = []

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        self.asked: list[list[str]] = []
        Reader.built.append(self)

    async def recognize(self, image: np.ndarray, options: dict) -> list[Line]:
        self.asked.append(options["languages"])
        return [line("Sapere aude", 0)]

    def move(self, device: str) -> None: ...


def test_each_voter_reads_with_its_own_languages_and_the_request_names_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ensemble, "VOTER_ENGINES", {"tesseract": Reader, "rapidocr": Reader})
    Reader.built.clear()
    spec = ModelSpec(name="ensemble", kind="ocr", engine="ensemble", footprint_mb=0)
    engine = EnsembleEngine(spec, Settings(OCR_SIDECAR_API_KEY="k"), "cpu")
    tesseract, rapidocr = Reader.built  # one engine object per engine, however many votes
    image = np.zeros((10, 10, 3), np.uint8)
    [found] = asyncio.run(engine.recognize(image, {}))
    assert found["text"] == "Sapere aude"
    assert tesseract.asked == [["fraktur"], ["frk"]] and rapidocr.asked == [[]]
    with pytest.raises(InvalidInput):
        asyncio.run(engine.recognize(image, {"languages": ["deu"]}))
