"""Tesseract's TSV into lines and what request languages mean to it."""

from __future__ import annotations

import shutil

import pytest

from deployments.engines.ocr.tesseract import TesseractEngine, parse_osd, parse_tsv
from deployments.models import load_catalog
from serve_app.kernel.errors import InvalidInput
from serve_app.kernel.settings import Settings

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


def test_the_script_detection_report() -> None:
    report = ("Page number: 0\nOrientation in degrees: 0\nRotate: 0\n"
              "Orientation confidence: 16.50\nScript: Fraktur\nScript confidence: 13.64\n")
    assert parse_osd(report) == ("Fraktur", 13.64)
    assert parse_osd("Too few characters. Skipping this page\n") == ("unknown", 0.0)
