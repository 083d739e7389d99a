"""Tesseract's TSV into lines and what request languages mean to it; kraken recognition
on given baselines, and missing kraken models."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from deployments.models import ModelMissing, load_catalog
from deployments.ocr import TesseractEngine, parse_tsv
from deployments.ocr_kraken import KrakenRecognitionEngine, words_from_cuts
from serve_app.errors import InvalidInput
from serve_app.settings import Settings

HEADER = "\t".join(["level", "page_num", "block_num", "par_num", "line_num", "word_num",
                     "left", "top", "width", "height", "conf", "text"])
TSV = "\n".join([
    HEADER,
    "1\t1\t0\t0\t0\t0\t0\t0\t1000\t800\t-1\t",
    "4\t1\t1\t1\t1\t0\t10\t20\t300\t40\t-1\t",
    "5\t1\t1\t1\t1\t1\t10\t20\t100\t40\t96.5\tGuten",
    "5\t1\t1\t1\t1\t2\t120\t20\t190\t40\t88.5\tTag",
    "4\t1\t1\t1\t2\t0\t10\t70\t300\t40\t-1\t",
    "5\t1\t1\t1\t2\t1\t10\t70\t300\t40\t-1\t ",
    "4\t1\t2\t1\t1\t0\t10\t120\t200\t40\t-1\t",
    "5\t1\t2\t1\t1\t1\t10\t120\t200\t40\t50\tſelbſt",
])


def test_tsv_words_become_lines_with_mean_confidence() -> None:
    lines = parse_tsv(TSV)
    assert [line["text"] for line in lines] == ["Guten Tag", "ſelbſt"]  # empty line dropped
    assert lines[0]["bbox"] == (10.0, 20.0, 310.0, 60.0)
    assert lines[0]["confidence"] == pytest.approx(0.925)
    assert lines[0]["words"] == [
        {"text": "Guten", "bbox": (10.0, 20.0, 110.0, 60.0), "confidence": 0.965},
        {"text": "Tag", "bbox": (120.0, 20.0, 310.0, 60.0), "confidence": 0.885}]


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract not installed here")
def test_languages_map_to_installed_models(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    engine = TesseractEngine(load_catalog()["tesseract"], Settings.load(), "cpu")
    assert engine.languages([]) == "Fraktur+deu"
    assert engine.languages(["fraktur", "DEU", "de"]) == "Fraktur+deu"
    with pytest.raises(InvalidInput, match="installed"):
        engine.languages(["klingon"])


def _kraken(clean_env: pytest.MonkeyPatch, path: str) -> KrakenRecognitionEngine:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    spec = load_catalog({"rec": {"kind": "ocr", "engine": "kraken", "footprint_mb": 1,
                                 "path": path}})["rec"]
    return KrakenRecognitionEngine(spec, Settings.load(), "cpu")


def test_kraken_recognises_each_given_baseline_line(clean_env: pytest.MonkeyPatch,
                                                    tiny_models: dict[str, str]) -> None:
    engine = _kraken(clean_env, tiny_models["kraken"])
    image = np.full((200, 600, 3), 255, dtype=np.uint8)
    image[60:90, 40:560] = 0  # something line-like to cut out
    line = {"baseline": [(40.0, 85.0), (560.0, 85.0)],
            "boundary": [(40.0, 55.0), (560.0, 55.0), (560.0, 95.0), (40.0, 95.0)],
            "bbox": (40.0, 55.0, 560.0, 95.0), "region": "r1"}
    degenerate = {**line, "baseline": [(40.0, 85.0)]}  # one point: not a line, skipped
    lines = asyncio.run(engine.recognize(image, {"segmentation": [line, degenerate]}))
    assert len(lines) == 1
    [got] = lines
    assert isinstance(got["text"], str)
    assert got["baseline"] == line["baseline"] and got["polygon"] == line["boundary"]
    assert got["region"] == "r1"
    assert got["confidence"] is None or 0.0 <= got["confidence"] <= 1.0
    assert asyncio.run(engine.recognize(image, {"segmentation": []})) == []
    with pytest.raises(InvalidInput, match="segmented lines"):
        asyncio.run(engine.recognize(image, {}))


def test_kraken_character_cuts_become_word_boxes() -> None:
    square = lambda x: [(x, 10), (x + 8, 10), (x + 8, 30), (x, 30)]  # noqa: E731
    cuts = [square(x) for x in (0, 10, 20, 30, 40)]
    words = words_from_cuts("ab cd", cuts, [0.9, 0.7, 0.5, 1.0, 0.6])
    assert words == [{"text": "ab", "bbox": (0.0, 10.0, 18.0, 30.0), "confidence": 0.8},
                     {"text": "cd", "bbox": (30.0, 10.0, 48.0, 30.0), "confidence": 0.8}]
    assert words_from_cuts("ab cd", cuts[:3], [0.9] * 3) is None  # cuts do not line up
    assert words_from_cuts("  ", [], []) is None


def test_a_missing_kraken_model_names_its_path(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelMissing, match=r"kraken/absent\.mlmodel"):
        _kraken(clean_env, "kraken/absent.mlmodel")
