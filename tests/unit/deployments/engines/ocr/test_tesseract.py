"""Tesseract's TSV into lines and what request languages mean to it."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from deployments.engines.ocr.tesseract import TesseractEngine, parse_osd, parse_tsv
from deployments.models import load_catalog
from serve_app.kernel.errors import InvalidInput, UpstreamTimeout
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


HANGING_TESSERACT = """#!/bin/sh
if [ "$1" = "--list-langs" ]; then printf 'List of available languages (1):\\ndeu\\n'; exit 0; fi
echo $$ > "$PID_FILE"
exec sleep 600
"""


def hanging_engine(tmp_path: Path, env: pytest.MonkeyPatch, deadline_s: float
                   ) -> TesseractEngine:
    """The real engine over a tesseract that never finishes a page."""
    binary = tmp_path / "bin" / "tesseract"
    binary.parent.mkdir()
    binary.write_text(HANGING_TESSERACT)
    binary.chmod(0o755)
    env.setenv("PATH", f"{binary.parent}:{os.environ['PATH']}")
    env.setenv("PID_FILE", str(tmp_path / "pid"))
    return TesseractEngine(load_catalog()["tesseract"], Settings(
        OCR_SIDECAR_API_KEY="k", DEPLOYMENT_CALL_TIMEOUT_S=deadline_s), "cpu")


def gone(pid_file: Path) -> bool:
    """Whether the process that wrote pid_file has exited (and was reaped)."""
    try:
        os.kill(int(pid_file.read_text()), 0)
    except ProcessLookupError:
        return True
    return False


def test_a_hung_tesseract_is_a_504_at_its_deadline_and_is_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = hanging_engine(tmp_path, monkeypatch, deadline_s=0.5)
    page = np.full((40, 40, 3), 255, np.uint8)
    with pytest.raises(UpstreamTimeout, match="DEPLOYMENT_CALL_TIMEOUT_S"):
        asyncio.run(engine.recognize(page, {"languages": ["deu"]}))
    assert gone(tmp_path / "pid")


def test_a_cancelled_page_kills_its_tesseract(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    engine = hanging_engine(tmp_path, monkeypatch, deadline_s=600)
    page = np.full((40, 40, 3), 255, np.uint8)

    async def cancel_once_running() -> None:
        task = asyncio.create_task(engine.recognize(page, {"languages": ["deu"]}))
        while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_once_running())
    assert gone(tmp_path / "pid")
